#include "agent/health_probe.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "shared/http_client.h"

namespace hoist::agent {
namespace {

// Output of a command may be long; the detail keeps its end.
std::string Tail(absl::string_view text, size_t max) {
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.remove_suffix(1);
  if (text.size() > max) text = text.substr(text.size() - max);
  return std::string(text);
}

std::string TcpConnect(const std::string& endpoint, absl::Duration timeout) {
  size_t colon = endpoint.rfind(':');
  std::string host = endpoint.substr(0, colon);
  int port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(endpoint.substr(colon + 1), &port)) {
    return absl::StrCat("bad endpoint ", endpoint);
  }
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (::inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) return absl::StrCat("bad address ", host);
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::StrCat("socket: ", std::strerror(errno));
  std::string error;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    if (errno != EINPROGRESS) {
      error = std::strerror(errno);
    } else {
      pollfd p{fd, POLLOUT, 0};
      int rc = ::poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(timeout)));
      if (rc == 0) {
        error = "timed out";
      } else if (rc < 0) {
        error = std::strerror(errno);
      } else {
        int so_error = 0;
        socklen_t len = sizeof(so_error);
        ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &len);
        if (so_error != 0) error = std::strerror(so_error);
      }
    }
  }
  ::close(fd);
  return error;
}

ProbeOutcome ProbeHttp(const docker::ContainerInfo& container, const hoist::v1::HttpCheck& http,
                       absl::Duration timeout) {
  ProbeOutcome out;
  std::string endpoint = ContainerEndpoint(container, http.port());
  if (endpoint.empty()) {
    out.detail = absl::StrCat("port ", http.port(), " is neither published nor reachable on a container IP");
    return out;
  }
  std::string url = absl::StrCat("http://", endpoint, http.path());
  auto response = HttpGet(url, timeout);
  if (!response.ok()) {
    out.detail = std::string(response.status().message());
    return out;
  }
  if (response->status < 200 || response->status > 299) {
    out.detail = absl::StrCat("GET ", url, ": HTTP ", response->status);
    return out;
  }
  nlohmann::json body = nlohmann::json::parse(response->body, nullptr, /*allow_exceptions=*/false);
  if (body.is_object() && body.contains("version") && body["version"].is_string()) {
    out.version = body["version"].get<std::string>();
  }
  if (!http.expected_version().empty() && out.version != http.expected_version()) {
    out.detail = out.version.empty()
                     ? absl::StrCat("GET ", url, ": HTTP ", response->status, " but the body has no \"version\"; expected ",
                                    http.expected_version())
                     : absl::StrCat("GET ", url, ": version ", out.version, ", expected ", http.expected_version());
    return out;
  }
  out.passed = true;
  out.detail = absl::StrCat("GET ", url, ": HTTP ", response->status,
                            out.version.empty() ? "" : absl::StrCat(", version ", out.version));
  return out;
}

}  // namespace

std::string ContainerEndpoint(const docker::ContainerInfo& container, uint32_t port) {
  const std::string key = absl::StrCat(port, "/tcp");
  auto published = container.published_ports.find(key);
  if (published != container.published_ports.end() && published->second != 0) {
    // Bound to one address (a host's address on the network between hosts),
    // the port answers there only.
    auto ip = container.published_ips.find(key);
    return absl::StrCat(ip == container.published_ips.end() ? "127.0.0.1" : ip->second, ":", published->second);
  }
  for (const auto& [network, ip] : container.network_ips) {
    if (!ip.empty()) return absl::StrCat(ip, ":", port);
  }
  return "";
}

ProbeOutcome ProbeOnce(docker::DockerApi& docker, const docker::ContainerInfo& container,
                       const hoist::v1::HealthCheck& check, absl::Duration timeout) {
  ProbeOutcome out;
  switch (check.kind_case()) {
    case hoist::v1::HealthCheck::kHttp:
      return ProbeHttp(container, check.http(), timeout);
    case hoist::v1::HealthCheck::kTcp: {
      std::string endpoint = ContainerEndpoint(container, check.tcp().port());
      if (endpoint.empty()) {
        out.detail = absl::StrCat("port ", check.tcp().port(), " is neither published nor reachable on a container IP");
        return out;
      }
      std::string error = TcpConnect(endpoint, timeout);
      out.passed = error.empty();
      out.detail = out.passed ? absl::StrCat("connected to ", endpoint) : absl::StrCat("connect ", endpoint, ": ", error);
      return out;
    }
    case hoist::v1::HealthCheck::kDocker: {
      auto info = docker.Inspect(container.id);
      if (!info.ok()) {
        out.detail = absl::StrCat("inspect: ", info.status().message());
        return out;
      }
      if (info->health.empty()) {
        out.permanent = true;
        out.detail = absl::StrCat("container ", container.name, " has no Docker HEALTHCHECK");
        return out;
      }
      out.passed = info->health == "healthy";
      out.detail = absl::StrCat("Docker health: ", info->health);
      return out;
    }
    case hoist::v1::HealthCheck::kCommand: {
      std::vector<std::string> argv(check.command().command().begin(), check.command().command().end());
      auto result = docker.Exec(container.id, argv, timeout);
      if (!result.ok()) {
        out.detail = absl::StrCat("exec: ", result.status().message());
        return out;
      }
      out.passed = result->exit_code == 0;
      out.detail = absl::StrCat("command exited with ", result->exit_code);
      std::string tail = Tail(result->output, 200);
      if (!tail.empty()) absl::StrAppend(&out.detail, ": ", tail);
      return out;
    }
    case hoist::v1::HealthCheck::KIND_NOT_SET:
      break;
  }
  out.permanent = true;
  out.detail = "no kind of check";
  return out;
}

}  // namespace hoist::agent

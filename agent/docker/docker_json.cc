// JSON to and from the Docker Engine: readers of Docker's answers that never
// throw (a missing or mistyped field reads as empty), the ContainerInfo of an
// inspect or a list entry, and the body of POST /containers/create.

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "agent/docker/docker_internal.h"

namespace hoist::docker::internal {
namespace {

// Docker writes "0001-01-01T00:00:00Z" for "never".
absl::Time ParseDockerTime(absl::string_view text) {
  absl::Time t;
  std::string err;
  if (text.empty() || absl::StartsWith(text, "0001-") || !absl::ParseTime(absl::RFC3339_full, text, &t, &err)) {
    return absl::InfinitePast();
  }
  return t;
}

int64_t Nanos(absl::Duration d) { return absl::ToInt64Nanoseconds(d); }

// The summary of `docker ps`: "Up 3 minutes (healthy)", "Exited (1) 2 seconds ago".
void ParseSummary(absl::string_view status, ContainerInfo* info) {
  if (absl::StrContains(status, "(healthy)")) info->health = "healthy";
  if (absl::StrContains(status, "(unhealthy)")) info->health = "unhealthy";
  if (absl::StrContains(status, "(health: starting)")) info->health = "starting";
  if (absl::ConsumePrefix(&status, "Exited (")) {
    int code = 0;
    if (absl::SimpleAtoi(status.substr(0, status.find(')')), &code)) info->exit_code = code;
  }
}

// A host address a port is bound to that names one interface (not 0.0.0.0 or ::).
bool IsSpecificAddress(const std::string& ip) { return !ip.empty() && ip != "0.0.0.0" && ip != "::"; }

}  // namespace

std::string Clip(absl::string_view s, size_t n) {
  s = absl::StripAsciiWhitespace(s);
  if (s.size() <= n) return std::string(s);
  return absl::StrCat(s.substr(0, n), "...");
}

std::string DockerMessage(absl::string_view body) {
  json j = json::parse(body.begin(), body.end(), nullptr, false);
  if (j.is_object()) {
    auto it = j.find("message");
    if (it != j.end() && it->is_string()) return it->get<std::string>();
  }
  return body.empty() ? "(no message)" : Clip(body);
}

absl::StatusOr<json> ParseJson(absl::string_view body, absl::string_view what) {
  json j = json::parse(body.begin(), body.end(), nullptr, false);
  if (j.is_discarded()) {
    return absl::InternalError(absl::StrCat("docker ", what, ": the answer is not valid JSON: ", Clip(body, 200)));
  }
  return j;
}

absl::StatusOr<json> ParseJsonObject(absl::string_view body, absl::string_view what) {
  auto j = ParseJson(body, what);
  if (!j.ok()) return j.status();
  if (!j->is_object()) {
    return absl::InternalError(absl::StrCat("docker ", what, ": expected a JSON object, got: ", Clip(body, 200)));
  }
  return j;
}

const json* Field(const json& j, const char* key) {
  if (!j.is_object()) return nullptr;
  auto it = j.find(key);
  return it == j.end() || it->is_null() ? nullptr : &*it;
}

std::string Str(const json& j, const char* key) {
  const json* f = Field(j, key);
  return f != nullptr && f->is_string() ? f->get<std::string>() : std::string();
}

int64_t Int(const json& j, const char* key) {
  const json* f = Field(j, key);
  return f != nullptr && f->is_number_integer() ? f->get<int64_t>() : 0;
}

bool Bool(const json& j, const char* key) {
  const json* f = Field(j, key);
  return f != nullptr && f->is_boolean() && f->get<bool>();
}

const json& Obj(const json& j, const char* key) {
  static const json kEmpty = json::object();
  const json* f = Field(j, key);
  return f != nullptr && f->is_object() ? *f : kEmpty;
}

std::vector<std::string> Strings(const json& j, const char* key) {
  std::vector<std::string> out;
  const json* f = Field(j, key);
  if (f == nullptr || !f->is_array()) return out;
  for (const json& v : *f) {
    if (v.is_string()) out.push_back(v.get<std::string>());
  }
  return out;
}

std::map<std::string, std::string> StringMap(const json& j, const char* key) {
  std::map<std::string, std::string> out;
  for (const auto& [k, v] : Obj(j, key).items()) {
    if (v.is_string()) out[k] = v.get<std::string>();
  }
  return out;
}

ContainerInfo ContainerFromInspect(const json& j) {
  ContainerInfo info;
  info.id = Str(j, "Id");
  info.name = Str(j, "Name");
  if (absl::StartsWith(info.name, "/")) info.name.erase(0, 1);
  const json& config = Obj(j, "Config");
  info.image = Str(config, "Image");
  info.image_id = Str(j, "Image");
  info.labels = StringMap(config, "Labels");
  const json& state = Obj(j, "State");
  info.state = Str(state, "Status");
  info.health = Str(Obj(state, "Health"), "Status");
  info.exit_code = static_cast<int>(Int(state, "ExitCode"));
  info.created_at = ParseDockerTime(Str(j, "Created"));
  info.started_at = ParseDockerTime(Str(state, "StartedAt"));
  const json& settings = Obj(j, "NetworkSettings");
  for (const auto& [port, bindings] : Obj(settings, "Ports").items()) {
    if (!bindings.is_array()) continue;
    for (const json& b : bindings) {
      int host_port = 0;
      if (absl::SimpleAtoi(Str(b, "HostPort"), &host_port) && host_port > 0 && host_port < 65536) {
        info.published_ports.emplace(port, static_cast<uint16_t>(host_port));
        if (std::string ip = Str(b, "HostIp"); IsSpecificAddress(ip)) info.published_ips.emplace(port, ip);
        break;
      }
    }
  }
  for (const auto& [name, net] : Obj(settings, "Networks").items()) {
    info.network_ips[name] = Str(net, "IPAddress");
  }
  return info;
}

ContainerInfo ContainerFromList(const json& j) {
  ContainerInfo info;
  info.id = Str(j, "Id");
  std::vector<std::string> names = Strings(j, "Names");
  if (!names.empty()) info.name = std::string(absl::StripPrefix(names[0], "/"));
  info.image = Str(j, "Image");
  info.image_id = Str(j, "ImageID");
  info.labels = StringMap(j, "Labels");
  info.state = Str(j, "State");
  ParseSummary(Str(j, "Status"), &info);
  info.created_at = absl::FromUnixSeconds(Int(j, "Created"));
  const json* ports = Field(j, "Ports");
  if (ports != nullptr && ports->is_array()) {
    for (const json& p : *ports) {
      int64_t pub = Int(p, "PublicPort");
      if (pub <= 0 || pub > 65535) continue;
      std::string type = Str(p, "Type");
      std::string key = absl::StrCat(Int(p, "PrivatePort"), "/", type.empty() ? "tcp" : type);
      if (info.published_ports.emplace(key, static_cast<uint16_t>(pub)).second) {
        if (std::string ip = Str(p, "IP"); IsSpecificAddress(ip)) info.published_ips.emplace(key, ip);
      }
    }
  }
  for (const auto& [name, net] : Obj(Obj(j, "NetworkSettings"), "Networks").items()) {
    info.network_ips[name] = Str(net, "IPAddress");
  }
  return info;
}

absl::StatusOr<json> CreateBody(const ContainerSpec& spec) {
  if (spec.image.empty()) return absl::InvalidArgumentError("container spec: image is empty");
  json body = json::object();
  body["Image"] = spec.image;
  if (!spec.command.empty()) body["Cmd"] = spec.command;
  json env = json::array();
  for (const auto& [k, v] : spec.env) {
    if (k.empty() || absl::StrContains(k, '=')) {
      return absl::InvalidArgumentError(absl::StrCat("container spec: env name \"", k, "\" is empty or contains '='"));
    }
    env.push_back(absl::StrCat(k, "=", v));
  }
  body["Env"] = env;
  body["Labels"] = spec.labels;

  json host = json::object();
  json exposed = json::object();
  json bindings = json::object();
  for (const PortBinding& p : spec.ports) {
    if (p.container_port == 0) return absl::InvalidArgumentError("container spec: a port has container_port 0");
    if (p.protocol != "tcp" && p.protocol != "udp" && p.protocol != "sctp") {
      return absl::InvalidArgumentError(absl::StrCat("container spec: port ", p.container_port, " has protocol \"",
                                                     p.protocol, "\"; use tcp, udp or sctp"));
    }
    std::string key = absl::StrCat(p.container_port, "/", p.protocol);
    exposed[key] = json::object();
    json binding = json::object();
    binding["HostIp"] = p.host_ip;
    binding["HostPort"] = p.host_port == 0 ? std::string() : absl::StrCat(p.host_port);
    bindings[key].push_back(binding);
  }
  if (!exposed.empty()) body["ExposedPorts"] = exposed;
  if (!bindings.empty()) host["PortBindings"] = bindings;

  json mounts = json::array();
  for (const Mount& m : spec.mounts) {
    if (m.source.empty() || m.target.empty() || m.target[0] != '/') {
      return absl::InvalidArgumentError(absl::StrCat("container spec: mount \"", m.source, "\" -> \"", m.target,
                                                     "\" needs a source and an absolute target"));
    }
    json mount = json::object();
    mount["Type"] = m.is_bind() ? "bind" : "volume";
    mount["Source"] = m.source;
    mount["Target"] = m.target;
    mount["ReadOnly"] = m.read_only;
    mounts.push_back(mount);
  }
  if (!mounts.empty()) host["Mounts"] = mounts;
  if (!spec.restart_policy.empty()) host["RestartPolicy"] = {{"Name", spec.restart_policy}};
  host["Privileged"] = spec.privileged;
  if (!spec.network.empty()) {
    host["NetworkMode"] = spec.network;
    json endpoint = json::object();
    if (!spec.network_aliases.empty()) endpoint["Aliases"] = spec.network_aliases;
    body["NetworkingConfig"] = {{"EndpointsConfig", {{spec.network, endpoint}}}};
  } else if (!spec.network_aliases.empty()) {
    return absl::InvalidArgumentError("container spec: network aliases need a network (the default bridge has none)");
  }
  body["HostConfig"] = host;

  if (spec.healthcheck) {
    const HealthConfig& h = *spec.healthcheck;
    json hc = json::object();
    // An empty test keeps the image's HEALTHCHECK command with these timings.
    if (!h.test.empty()) {
      json test = json::array({"CMD"});
      for (const std::string& arg : h.test) test.push_back(arg);
      hc["Test"] = test;
    }
    hc["Interval"] = Nanos(h.interval);
    hc["Timeout"] = Nanos(h.timeout);
    hc["StartPeriod"] = Nanos(h.start_period);
    hc["Retries"] = h.retries;
    body["Healthcheck"] = hc;
  }
  if (spec.stop_timeout) {
    body["StopTimeout"] = absl::ToInt64Seconds(absl::Ceil(*spec.stop_timeout, absl::Seconds(1)));
  }
  return body;
}

}  // namespace hoist::docker::internal

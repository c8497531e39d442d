#include "shared/config.h"

#include <charconv>
#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "shared/yaml_text.h"
#include "yaml-cpp/yaml.h"

namespace hoist {

absl::StatusOr<absl::Duration> ParseDurationSetting(absl::string_view what, absl::string_view text) {
  absl::Duration d;
  std::string s(absl::StripAsciiWhitespace(text));
  if (s.empty() || !absl::ParseDuration(s, &d) || d == absl::InfiniteDuration() ||
      d < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": invalid duration \"", text,
        "\"; expected a non-negative number with a unit, such as 250ms, 5s or 1m30s"));
  }
  return d;
}

absl::StatusOr<uint16_t> ParsePortSetting(absl::string_view what, absl::string_view text) {
  uint32_t port = 0;
  if (!absl::SimpleAtoi(text, &port) || port == 0 || port > 65535 ||
      text.find_first_not_of("0123456789") != absl::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": invalid port \"", text, "\"; expected a number from 1 to 65535"));
  }
  return static_cast<uint16_t>(port);
}

absl::StatusOr<bool> ParseBoolSetting(absl::string_view what, absl::string_view text) {
  std::string lower = absl::AsciiStrToLower(absl::StripAsciiWhitespace(text));
  if (lower == "true" || lower == "yes" || lower == "on" || lower == "1") return true;
  if (lower == "false" || lower == "no" || lower == "off" || lower == "0") return false;
  return absl::InvalidArgumentError(
      absl::StrCat(what, ": invalid boolean \"", text, "\"; expected true or false"));
}

std::string HostPort::ToString() const {
  if (host.find(':') != std::string::npos) return absl::StrCat("[", host, "]:", port);
  return absl::StrCat(host, ":", port);
}

namespace {

absl::StatusOr<HostPort> ParseAddress(absl::string_view what, absl::string_view text, bool any_port) {
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": invalid address \"", text, "\" (", why,
        "); expected host:port, such as 127.0.0.1:7443 or [::1]:7443"));
  };
  HostPort hp;
  absl::string_view port_text;
  if (!text.empty() && text[0] == '[') {
    size_t close = text.find(']');
    if (close == absl::string_view::npos) return bad("no closing ']'");
    hp.host = std::string(text.substr(1, close - 1));
    if (close + 1 >= text.size() || text[close + 1] != ':') return bad("no port after ']'");
    port_text = text.substr(close + 2);
  } else {
    size_t colon = text.rfind(':');
    if (colon == absl::string_view::npos) return bad("no port");
    hp.host = std::string(text.substr(0, colon));
    if (hp.host.find(':') != std::string::npos) return bad("IPv6 hosts need [brackets]");
    port_text = text.substr(colon + 1);
  }
  if (hp.host.empty()) return bad("no host");
  for (char c : hp.host) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-' && c != ':' &&
        c != '_') {
      return bad(absl::StrCat("'", std::string(1, c), "' in the host"));
    }
  }
  if (any_port && port_text == "0") return hp;  // port 0: picked when bound
  auto port = ParsePortSetting(what, port_text);
  if (!port.ok()) return bad(absl::StrCat("port \"", port_text, "\" is not 1 to 65535"));
  hp.port = *port;
  return hp;
}

}  // namespace

absl::StatusOr<HostPort> ParseHostPort(absl::string_view what, absl::string_view text) {
  return ParseAddress(what, text, /*any_port=*/false);
}

absl::StatusOr<HostPort> ParseListenAddress(absl::string_view what, absl::string_view text) {
  return ParseAddress(what, text, /*any_port=*/true);
}

absl::StatusOr<std::map<std::string, ConfigValue>> ParseConfigText(
    absl::string_view file_name, absl::string_view text, const std::set<std::string>& known) {
  auto loaded = LoadYamlDocument(file_name, text, "config file");
  if (!loaded.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(loaded.status().message(), "; expected YAML key: value lines"));
  }
  YAML::Node root = *loaded;
  std::map<std::string, ConfigValue> out;
  if (root.IsNull()) return out;
  if (!root.IsMap()) {
    return absl::InvalidArgumentError(absl::StrCat(file_name, ":", root.Mark().line + 1,
                                                   ": expected a mapping of key: value"));
  }
  for (const auto& kv : root) {
    int line = kv.first.Mark().line + 1;
    if (!kv.first.IsScalar()) {
      return absl::InvalidArgumentError(absl::StrCat(file_name, ":", line, ": keys must be plain names"));
    }
    std::string key = kv.first.Scalar();
    if (!known.contains(key)) {
      return absl::InvalidArgumentError(absl::StrCat(file_name, ":", line, ": unknown key \"", key,
                                                     "\"; known keys: ", absl::StrJoin(known, ", ")));
    }
    if (!kv.second.IsScalar()) {
      return absl::InvalidArgumentError(absl::StrCat(file_name, ":", line, ": \"", key,
                                                     "\" must be a single value, not a list or mapping"));
    }
    if (out.contains(key)) {
      return absl::InvalidArgumentError(absl::StrCat(file_name, ":", line, ": \"", key,
                                                     "\" is set twice (first on line ",
                                                     out[key].line, ")"));
    }
    out[key] = ConfigValue{kv.second.Scalar(), line};
  }
  return out;
}

absl::StatusOr<std::map<std::string, ConfigValue>> LoadConfigFile(
    const std::string& path, const std::set<std::string>& known) {
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("cannot read config file ", path,
                                            ": no such file or no permission"));
  }
  std::stringstream buf;
  buf << in.rdbuf();
  return ParseConfigText(path, buf.str(), known);
}

}  // namespace hoist

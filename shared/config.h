#pragma once

// Parsing of the small values every binary takes from flags, env vars and its
// config file: durations, ports, host:port addresses, and flat YAML config
// files whose unknown keys are errors. Each error names the input and what
// was expected.

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace hoist {

// Parses a non-negative, finite duration such as "250ms", "5s", "1m30s".
// `what` names the setting in the error ("--heartbeat-interval").
absl::StatusOr<absl::Duration> ParseDurationSetting(absl::string_view what, absl::string_view text);

// Parses a TCP port, 1..65535.
absl::StatusOr<uint16_t> ParsePortSetting(absl::string_view what, absl::string_view text);

// Parses "true/false/yes/no/on/off/1/0".
absl::StatusOr<bool> ParseBoolSetting(absl::string_view what, absl::string_view text);

struct HostPort {
  std::string host;
  uint16_t port = 0;
  std::string ToString() const;
};

// Parses "host:port", "1.2.3.4:port" or "[::1]:port".
absl::StatusOr<HostPort> ParseHostPort(absl::string_view what, absl::string_view text);
// The same for an address to listen on, where port 0 asks for any free port.
absl::StatusOr<HostPort> ParseListenAddress(absl::string_view what, absl::string_view text);

// ConfigValue is one scalar of a config file and where it was written.
struct ConfigValue {
  std::string value;
  int line = 0;  // 1-based
};

// Reads a flat YAML mapping of scalars (a config file). Keys outside `known`
// are refused with the file, line and the list of known keys; so are nested
// values and duplicate keys.
absl::StatusOr<std::map<std::string, ConfigValue>> ParseConfigText(
    absl::string_view file_name, absl::string_view text, const std::set<std::string>& known);

// Reads and parses a config file from disk.
absl::StatusOr<std::map<std::string, ConfigValue>> LoadConfigFile(
    const std::string& path, const std::set<std::string>& known);

}  // namespace hoist

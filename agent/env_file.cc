#include "agent/env_file.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "agent/file_util.h"

namespace hoist::agent {

absl::StatusOr<std::map<std::string, std::string>> ReadEnvFile(const std::string& path) {
  auto text = ReadFileToString(path);
  if (!text.ok()) return text.status();
  std::map<std::string, std::string> env;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(*text, '\n')) {
    ++line_number;
    line = absl::StripTrailingAsciiWhitespace(line);
    absl::string_view trimmed = absl::StripLeadingAsciiWhitespace(line);
    if (trimmed.empty() || absl::StartsWith(trimmed, "#")) continue;
    absl::ConsumePrefix(&trimmed, "export ");
    size_t eq = trimmed.find('=');
    if (eq == absl::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("env file ", path, " line ", line_number, ": expected KEY=VALUE"));
    }
    absl::string_view key = absl::StripAsciiWhitespace(trimmed.substr(0, eq));
    absl::string_view value = trimmed.substr(eq + 1);
    if (key.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("env file ", path, " line ", line_number, ": empty name"));
    }
    if (value.size() >= 2 && (value.front() == '"' || value.front() == '\'') && value.back() == value.front()) {
      value = value.substr(1, value.size() - 2);
    }
    env[std::string(key)] = std::string(value);
  }
  return env;
}

}  // namespace hoist::agent

#pragma once

// Logging set-up for the three binaries: spdlog to stderr, as plain text for
// people or as JSON lines for log collectors, at a level chosen by a flag.

#include <memory>
#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "fmt/format.h"
#include "spdlog/common.h"
#include "spdlog/formatter.h"

namespace hoist {

enum class LogFormat { kText, kJson };

struct LogOptions {
  spdlog::level::level_enum level = spdlog::level::info;
  LogFormat format = LogFormat::kText;
  // Logger name, shown in every line: "hoistd", "hoist-agent", "hoist".
  std::string component = "hoist";
};

// Parses "trace", "debug", "info", "warn", "error", "critical" or "off".
absl::StatusOr<spdlog::level::level_enum> ParseLogLevel(absl::string_view text);

// Parses "text" or "json".
absl::StatusOr<LogFormat> ParseLogFormat(absl::string_view text);

// Makes a logger writing to stderr the process default. Call once from main().
void InitLogging(const LogOptions& options);

// Formats each record as one JSON object per line:
// {"ts":"2026-11-22T01:02:03.456Z","level":"info","component":"hoistd","msg":"..."}.
// Exposed for tests.
std::unique_ptr<spdlog::formatter> MakeJsonFormatter(std::string component);

}  // namespace hoist

// Lets log calls format absl::string_view (Status::message()) and absl::Status.
template <>
struct fmt::formatter<absl::string_view> : fmt::formatter<fmt::string_view> {
  template <typename Ctx>
  auto format(absl::string_view s, Ctx& ctx) const {
    return fmt::formatter<fmt::string_view>::format(fmt::string_view(s.data(), s.size()), ctx);
  }
};

template <>
struct fmt::formatter<absl::Status> : fmt::formatter<fmt::string_view> {
  template <typename Ctx>
  auto format(const absl::Status& s, Ctx& ctx) const {
    std::string text = s.ToString();
    return fmt::formatter<fmt::string_view>::format(fmt::string_view(text), ctx);
  }
};

#include "controller/cli/table.h"

#include <algorithm>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace hoist::cli {

Table::Table(std::vector<std::string> header) : header_(std::move(header)) {}

void Table::AddRow(std::vector<std::string> cells) {
  if (cells.size() > header_.size()) std::abort();  // a programming error, never input
  cells.resize(header_.size());
  rows_.push_back(std::move(cells));
}

void Table::Print(std::ostream& out, int indent) const {
  std::vector<size_t> widths(header_.size(), 0);
  auto measure = [&](const std::vector<std::string>& row) {
    for (size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], VisibleWidth(row[i]));
  };
  measure(header_);
  for (const auto& row : rows_) measure(row);
  auto print_row = [&](const std::vector<std::string>& row) {
    std::string line(indent, ' ');
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line += std::string(widths[i] - VisibleWidth(row[i]) + 2, ' ');
    }
    // Trailing spaces from empty last cells help nobody.
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out << line << "\n";
  };
  print_row(header_);
  for (const auto& row : rows_) print_row(row);
}

size_t VisibleWidth(absl::string_view text) {
  size_t width = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(text[i]);
    if (c == 0x1b && i + 1 < text.size() && text[i + 1] == '[') {
      // CSI sequence: ESC [ parameters final-byte (0x40..0x7e).
      i += 2;
      while (i < text.size() && !(text[i] >= 0x40 && text[i] <= 0x7e)) ++i;
      continue;
    }
    if ((c & 0xc0) != 0x80) ++width;  // count code points, not continuation bytes
  }
  return width;
}

std::string Paint(absl::string_view text, Colour colour, bool enabled) {
  if (!enabled) return std::string(text);
  const char* code = "";
  switch (colour) {
    case Colour::kRed: code = "31"; break;
    case Colour::kYellow: code = "33"; break;
    case Colour::kGreen: code = "32"; break;
    case Colour::kBold: code = "1"; break;
  }
  return absl::StrCat("\x1b[", code, "m", text, "\x1b[0m");
}

absl::Time ToAbslTime(const google::protobuf::Timestamp& t) {
  if (t.seconds() == 0 && t.nanos() == 0) return absl::InfinitePast();
  return absl::FromUnixSeconds(t.seconds()) + absl::Nanoseconds(t.nanos());
}

absl::Duration ToAbslDuration(const google::protobuf::Duration& d) {
  return absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
}

std::string FormatTime(const google::protobuf::Timestamp& t) {
  absl::Time at = ToAbslTime(t);
  if (at == absl::InfinitePast()) return "-";
  return absl::FormatTime("%Y-%m-%d %H:%M:%S UTC", at, absl::UTCTimeZone());
}

std::string HumanDuration(absl::Duration d) {
  if (d < absl::ZeroDuration()) d = absl::ZeroDuration();
  if (d < absl::Seconds(1)) return absl::StrCat(absl::ToInt64Milliseconds(d), "ms");
  if (d < absl::Seconds(10)) return absl::StrFormat("%.1fs", absl::ToDoubleSeconds(d));
  int64_t s = absl::ToInt64Seconds(d);
  if (s < 60) return absl::StrCat(s, "s");
  if (s < 3600) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  if (s < 86400) return absl::StrFormat("%dh%02dm", s / 3600, (s % 3600) / 60);
  return absl::StrFormat("%dd%02dh", s / 86400, (s % 86400) / 3600);
}

std::string FormatAge(const google::protobuf::Timestamp& t, absl::Time now) {
  absl::Time at = ToAbslTime(t);
  if (at == absl::InfinitePast()) return "-";
  absl::Duration age = now - at;
  if (age < absl::Seconds(1)) return "just now";
  return absl::StrCat(HumanDuration(absl::Trunc(age, absl::Seconds(1))), " ago");
}

std::string FormatBytes(uint64_t bytes) {
  if (bytes < 1024) return absl::StrCat(bytes, " B");
  const char* units[] = {"KB", "MB", "GB", "TB"};
  double v = static_cast<double>(bytes) / 1024;
  int u = 0;
  while (v >= 1024 && u < 3) {
    v /= 1024;
    ++u;
  }
  return absl::StrFormat("%.1f %s", v, units[u]);
}

std::string ShortDigest(absl::string_view digest) {
  if (digest.empty()) return "-";
  absl::ConsumePrefix(&digest, "sha256:");
  return std::string(digest.substr(0, 12));
}

std::string OrDash(absl::string_view s) { return s.empty() ? "-" : std::string(s); }

std::string FirstLine(absl::string_view text, size_t max) {
  absl::string_view line = text.substr(0, text.find('\n'));
  if (line.size() <= max) return std::string(line);
  return absl::StrCat(line.substr(0, max > 3 ? max - 3 : 0), "...");
}

void PrintIndented(std::ostream& out, absl::string_view text, int indent) {
  text = absl::StripTrailingAsciiWhitespace(text);
  if (text.empty()) return;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (!line.empty()) out << std::string(indent, ' ') << line;
    out << "\n";
  }
}

}  // namespace hoist::cli

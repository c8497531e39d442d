#pragma once

// Plain-text output for the hoist CLI: aligned tables and the small formats
// every verb shares (times, ages, durations, sizes, short digests, colour).

#include <ostream>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "google/protobuf/duration.pb.h"
#include "google/protobuf/timestamp.pb.h"

namespace hoist::cli {

// Table prints rows under a header with columns padded to the widest cell.
// Cells may carry ANSI colour codes; widths count visible characters only.
class Table {
 public:
  explicit Table(std::vector<std::string> header);

  // Adds a row; missing cells print empty, extra cells are a programming error.
  void AddRow(std::vector<std::string> cells);
  bool empty() const { return rows_.empty(); }

  // Writes the header and rows, two spaces between columns, indented by
  // `indent` spaces; the last column is not padded.
  void Print(std::ostream& out, int indent = 0) const;

 private:
  std::vector<std::string> header_;
  std::vector<std::vector<std::string>> rows_;
};

// Number of characters a terminal shows for `text`: UTF-8 code points,
// without ANSI escape sequences.
size_t VisibleWidth(absl::string_view text);

// ANSI colours, used only when output goes to a terminal.
enum class Colour { kRed, kYellow, kGreen, kBold };
// Wraps text in the colour's escape codes when `enabled`, else returns it as is.
std::string Paint(absl::string_view text, Colour colour, bool enabled);

// "2026-01-15 14:03:07 UTC", or "-" for an unset timestamp.
std::string FormatTime(const google::protobuf::Timestamp& t);
// Converts a protobuf timestamp; InfinitePast when unset.
absl::Time ToAbslTime(const google::protobuf::Timestamp& t);
absl::Duration ToAbslDuration(const google::protobuf::Duration& d);
// "850ms", "12s", "3m05s", "2h04m": compact and stable for people.
std::string HumanDuration(absl::Duration d);
// "12s ago", "3m05s ago"; "-" when unset, "just now" for clock skew into the future.
std::string FormatAge(const google::protobuf::Timestamp& t, absl::Time now);
// "512 B", "4.0 KB", "12.3 MB", "1.2 GB" (powers of 1024).
std::string FormatBytes(uint64_t bytes);
// "sha256:0123456789ab" → "0123456789ab" (12 hex digits); "-" when empty.
std::string ShortDigest(absl::string_view digest);
// "-" for an empty string, else the string.
std::string OrDash(absl::string_view s);
// First line of a text, cut to `max` characters with "..." when longer.
std::string FirstLine(absl::string_view text, size_t max);

// Writes text line by line, each non-empty line indented; drops trailing newlines.
void PrintIndented(std::ostream& out, absl::string_view text, int indent);

}  // namespace hoist::cli

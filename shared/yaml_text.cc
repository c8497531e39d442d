#include "shared/yaml_text.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace hoist {
namespace {

// Length of the UTF-8 sequence at text[i], or 0 when it is not valid UTF-8
// (overlong forms, surrogates and code points above U+10FFFF included).
size_t Utf8SequenceAt(absl::string_view text, size_t i) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(text[k]); };
  const unsigned char c = b(i);
  if (c < 0x80) return 1;
  size_t n = 0;
  unsigned char lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (i + n > text.size()) return 0;
  if (b(i + 1) < lo || b(i + 1) > hi) return 0;
  for (size_t k = 2; k < n; ++k) {
    if (b(i + k) < 0x80 || b(i + k) > 0xBF) return 0;
  }
  return n;
}

std::string Where(absl::string_view file, absl::string_view text, size_t offset) {
  int line = 1, column = 1;
  for (size_t i = 0; i < offset && i < text.size(); ++i) {
    if (text[i] == '\n') {
      ++line;
      column = 1;
    } else {
      ++column;
    }
  }
  return absl::StrCat(file, ":", line, ":", column);
}

std::string Size(size_t bytes) {
  if (bytes >= (1u << 20)) return absl::StrFormat("%.1f MiB", static_cast<double>(bytes) / (1 << 20));
  if (bytes >= (1u << 10)) return absl::StrFormat("%.1f KiB", static_cast<double>(bytes) / (1 << 10));
  return absl::StrCat(bytes, " bytes");
}

}  // namespace

absl::Status CheckYamlText(absl::string_view file, absl::string_view text, absl::string_view what,
                           size_t max_bytes) {
  if (text.size() > max_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": the ", what, " is ", Size(text.size()),
                                                   "; Hoist reads at most ", Size(max_bytes),
                                                   " (is this the right file?)"));
  }
  for (size_t i = 0; i < text.size();) {
    if (text[i] == '\0') {
      return absl::InvalidArgumentError(absl::StrCat(Where(file, text, i), ": the ", what,
                                                     " holds a NUL byte; is it a text file?"));
    }
    const size_t n = Utf8SequenceAt(text, i);
    if (n == 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: byte 0x%02X is not UTF-8; save the %s as UTF-8 (iconv -f LATIN1 -t UTF-8, say)",
          Where(file, text, i), static_cast<unsigned char>(text[i]), what));
    }
    i += n;
  }
  return absl::OkStatus();
}

absl::StatusOr<YAML::Node> LoadYamlDocument(absl::string_view file, absl::string_view text, absl::string_view what,
                                            size_t max_bytes) {
  if (absl::Status s = CheckYamlText(file, text, what, max_bytes); !s.ok()) return s;
  // YAML::Load reads the first document only. (YAML::LoadAll would tell the
  // documents apart, but yaml-cpp 0.7's loops forever on some malformed
  // input, so the markers are found in the text instead: `---` at the start
  // of a line after content opens another document, and so does content
  // after a `...` line. Inside block scalars such lines are indented.)
  YAML::Node root;
  try {
    root = YAML::Load(std::string(text));
  } catch (const YAML::Exception& e) {
    std::string where(file);
    if (!e.mark.is_null()) absl::StrAppend(&where, ":", e.mark.line + 1, ":", e.mark.column + 1);
    return absl::InvalidArgumentError(absl::StrCat(where, ": not valid YAML (", e.msg, ")"));
  }
  auto marker = [](absl::string_view l, absl::string_view m) {
    return l.substr(0, 3) == m && (l.size() == 3 || l[3] == ' ' || l[3] == '\t' || l[3] == '\r');
  };
  bool content = false, ended = false;
  int line = 0, n = 0;
  for (size_t i = 0; i <= text.size() && line == 0;) {
    ++n;
    size_t end = text.find('\n', i);
    if (end == absl::string_view::npos) end = text.size();
    absl::string_view l = text.substr(i, end - i);
    i = end + 1;
    const bool blank = l.find_first_not_of(" \t\r") == absl::string_view::npos ||
                       l.substr(l.find_first_not_of(" \t\r")).substr(0, 1) == "#";
    if (marker(l, "---")) {
      if (content || ended) line = n;
      // A document may start on the marker's line: "--- {a: 1}".
      absl::string_view rest = l.substr(3);
      if (rest.find_first_not_of(" \t\r") != absl::string_view::npos && rest[rest.find_first_not_of(" \t\r")] != '#') {
        content = true;
      }
    } else if (marker(l, "...")) {
      ended = content || ended;
    } else if (!blank && !(l[0] == '%' && !content)) {
      if (ended) line = n;
      content = true;
    }
  }
  if (line > 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        file, ":", line, ": a second YAML document starts here; a ", what,
        " is one document, and Hoist would ignore the rest: remove the `---` line, or put the second document in a "
        "file of its own"));
  }
  return root;
}

}  // namespace hoist

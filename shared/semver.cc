#include "shared/semver.h"

#include <charconv>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace hoist {
namespace {

constexpr absl::string_view kVersionShape = "MAJOR.MINOR.PATCH such as 1.4.0 (optionally -PRERELEASE and +BUILD)";

bool IsIdentChar(char c) { return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-'; }

bool AllDigits(absl::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

absl::Status Bad(absl::string_view text, absl::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat("invalid version \"", text, "\": ", why, "; expected ", kVersionShape));
}

// Parses one numeric core part: digits only, no leading zero, fits in 64 bits.
absl::StatusOr<uint64_t> ParseNumber(absl::string_view part, absl::string_view text,
                                     absl::string_view name) {
  if (part.empty()) return Bad(text, absl::StrCat(name, " is empty"));
  if (!AllDigits(part)) return Bad(text, absl::StrCat(name, " \"", part, "\" is not a number"));
  if (part.size() > 1 && part[0] == '0') {
    return Bad(text, absl::StrCat(name, " \"", part, "\" has a leading zero"));
  }
  uint64_t value = 0;
  auto [ptr, ec] = std::from_chars(part.data(), part.data() + part.size(), value);
  if (ec != std::errc() || ptr != part.data() + part.size()) {
    return Bad(text, absl::StrCat(name, " \"", part, "\" is too large"));
  }
  return value;
}

int CompareIdentifiers(const std::string& a, const std::string& b) {
  bool a_num = AllDigits(a);
  bool b_num = AllDigits(b);
  if (a_num && b_num) {
    if (a.size() != b.size()) return a.size() < b.size() ? -1 : 1;  // no leading zeros
    return a.compare(b) < 0 ? -1 : (a == b ? 0 : 1);
  }
  if (a_num != b_num) return a_num ? -1 : 1;
  int c = a.compare(b);
  return c < 0 ? -1 : (c == 0 ? 0 : 1);
}

}  // namespace

absl::StatusOr<Version> Version::Parse(absl::string_view text) {
  if (text.empty()) return Bad(text, "it is empty");
  if (text[0] == 'v' || text[0] == 'V') {
    return Bad(text, absl::StrCat("drop the leading \"", text.substr(0, 1), "\""));
  }
  for (char c : text) {
    if (!IsIdentChar(c) && c != '.' && c != '+') {
      return Bad(text, absl::StrCat("character '", std::string(1, c), "' is not allowed"));
    }
  }
  Version v;
  absl::string_view rest = text;
  if (size_t plus = rest.find('+'); plus != absl::string_view::npos) {
    absl::string_view build = rest.substr(plus + 1);
    rest = rest.substr(0, plus);
    if (build.empty()) return Bad(text, "build metadata after '+' is empty");
    for (absl::string_view id : absl::StrSplit(build, '.')) {
      if (id.empty()) return Bad(text, "build metadata has an empty identifier");
      for (char c : id) {
        if (!IsIdentChar(c)) return Bad(text, "build metadata may hold only [0-9A-Za-z-.]");
      }
    }
    v.build_ = std::string(build);
  }
  if (size_t dash = rest.find('-'); dash != absl::string_view::npos) {
    absl::string_view pre = rest.substr(dash + 1);
    rest = rest.substr(0, dash);
    if (pre.empty()) return Bad(text, "pre-release after '-' is empty");
    for (absl::string_view id : absl::StrSplit(pre, '.')) {
      if (id.empty()) return Bad(text, "pre-release has an empty identifier");
      if (AllDigits(id) && id.size() > 1 && id[0] == '0') {
        return Bad(text, absl::StrCat("pre-release identifier \"", id, "\" has a leading zero"));
      }
      v.prerelease_.emplace_back(id);
    }
  }
  if (rest.find_first_not_of("0123456789.") != absl::string_view::npos) {
    return Bad(text, absl::StrCat("\"", rest, "\" holds characters other than digits and dots"));
  }
  std::vector<absl::string_view> parts = absl::StrSplit(rest, '.');
  if (parts.size() != 3) {
    return Bad(text, absl::StrCat("it has ", parts.size(), " numeric part",
                                  parts.size() == 1 ? "" : "s", ", not 3"));
  }
  auto major = ParseNumber(parts[0], text, "MAJOR");
  if (!major.ok()) return major.status();
  auto minor = ParseNumber(parts[1], text, "MINOR");
  if (!minor.ok()) return minor.status();
  auto patch = ParseNumber(parts[2], text, "PATCH");
  if (!patch.ok()) return patch.status();
  v.major_ = *major;
  v.minor_ = *minor;
  v.patch_ = *patch;
  return v;
}

std::string Version::ToString() const {
  std::string s = absl::StrCat(major_, ".", minor_, ".", patch_);
  if (!prerelease_.empty()) absl::StrAppend(&s, "-", absl::StrJoin(prerelease_, "."));
  if (!build_.empty()) absl::StrAppend(&s, "+", build_);
  return s;
}

std::ostream& operator<<(std::ostream& os, const Version& v) { return os << v.ToString(); }

std::strong_ordering Version::operator<=>(const Version& other) const {
  if (auto c = major_ <=> other.major_; c != 0) return c;
  if (auto c = minor_ <=> other.minor_; c != 0) return c;
  if (auto c = patch_ <=> other.patch_; c != 0) return c;
  if (prerelease_.empty() || other.prerelease_.empty()) {
    // A release outranks any of its pre-releases.
    return prerelease_.empty() <=> other.prerelease_.empty();
  }
  size_t n = std::min(prerelease_.size(), other.prerelease_.size());
  for (size_t i = 0; i < n; ++i) {
    int c = CompareIdentifiers(prerelease_[i], other.prerelease_[i]);
    if (c != 0) return c < 0 ? std::strong_ordering::less : std::strong_ordering::greater;
  }
  return prerelease_.size() <=> other.prerelease_.size();
}

// ---- ranges ----

namespace {

struct Partial {
  // Number of numeric parts given before any wildcard: 0 ("*"), 1, 2 or 3.
  int given = 0;
  Version version;  // missing parts are 0
};

bool IsWildcard(absl::string_view s) { return s == "x" || s == "X" || s == "*"; }

absl::StatusOr<Partial> ParsePartial(absl::string_view text, absl::string_view token,
                                     absl::string_view whole) {
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(
        "invalid version range \"", whole, "\": comparator \"", token, "\" ", why,
        "; expected comparators such as \">=1.4 <2\", \"^1.2.0\", \"~1.4\" or \"1.x\""));
  };
  if (text.empty()) return bad("has no version");
  if (IsWildcard(text)) return Partial{};
  // A pre-release or build makes it a full version.
  if (text.find_first_of("-+") != absl::string_view::npos) {
    auto v = Version::Parse(text);
    if (!v.ok()) return bad(absl::StrCat("is not a version (", v.status().message(), ")"));
    return Partial{3, *v};
  }
  std::vector<absl::string_view> parts = absl::StrSplit(text, '.');
  if (parts.size() > 3) return bad("has more than 3 numeric parts");
  Partial p;
  uint64_t nums[3] = {0, 0, 0};
  for (size_t i = 0; i < parts.size(); ++i) {
    if (IsWildcard(parts[i])) {
      for (size_t j = i + 1; j < parts.size(); ++j) {
        if (!IsWildcard(parts[j])) return bad("has a number after a wildcard");
      }
      break;
    }
    if (!AllDigits(parts[i])) return bad(absl::StrCat("has \"", parts[i], "\" where a number belongs"));
    if (parts[i].size() > 1 && parts[i][0] == '0') return bad("has a number with a leading zero");
    auto [ptr, ec] = std::from_chars(parts[i].data(), parts[i].data() + parts[i].size(), nums[i]);
    if (ec != std::errc()) return bad("has a number that is too large");
    p.given = static_cast<int>(i) + 1;
  }
  p.version = Version(nums[0], nums[1], nums[2]);
  return p;
}

// The smallest version above every version the partial covers, as X.Y.Z-0 so
// that pre-releases of the next version stay outside.
Version NextAfter(const Partial& p) {
  Version v;
  if (p.given == 1) v = Version(p.version.major() + 1, 0, 0);
  else if (p.given == 2) v = Version(p.version.major(), p.version.minor() + 1, 0);
  else v = Version(p.version.major(), p.version.minor(), p.version.patch() + 1);
  return *Version::Parse(v.ToString() + "-0");
}

}  // namespace

absl::Status VersionRange::ParseComparator(absl::string_view token, absl::string_view whole,
                                           std::vector<Comparator>& out) {
  absl::string_view rest = token;
  absl::string_view op;
  for (absl::string_view candidate : {">=", "<=", ">", "<", "=", "^", "~"}) {
    if (absl::StartsWith(rest, candidate)) {
      op = candidate;
      rest.remove_prefix(candidate.size());
      break;
    }
  }
  auto p = ParsePartial(rest, token, whole);
  if (!p.ok()) return p.status();
  const bool full = p->given == 3;
  if (p->given == 0) {  // "*", ">=*" ...: any version
    if (op == "<" || op == ">") {
      return absl::InvalidArgumentError(absl::StrCat("invalid version range \"", whole,
                                                     "\": comparator \"", token,
                                                     "\" matches nothing"));
    }
    out.push_back({Op::kGreaterEq, Version(0, 0, 0)});
    out.back().version.prerelease_ = {"0"};
    return absl::OkStatus();
  }
  if (op.empty() || op == "=") {
    if (full) {
      out.push_back({Op::kEq, p->version});
    } else {
      out.push_back({Op::kGreaterEq, p->version});
      out.push_back({Op::kLess, NextAfter(*p)});
    }
  } else if (op == ">=") {
    out.push_back({Op::kGreaterEq, p->version});
  } else if (op == ">") {
    if (full) out.push_back({Op::kGreater, p->version});
    else out.push_back({Op::kGreaterEq, NextAfter(*p)});
  } else if (op == "<") {
    if (full) out.push_back({Op::kLess, p->version});
    else out.push_back({Op::kLess, *Version::Parse(p->version.ToString() + "-0")});
  } else if (op == "<=") {
    if (full) out.push_back({Op::kLessEq, p->version});
    else out.push_back({Op::kLess, NextAfter(*p)});
  } else if (op == "~") {
    out.push_back({Op::kGreaterEq, p->version});
    Partial upper = *p;
    upper.given = p->given == 1 ? 1 : 2;
    out.push_back({Op::kLess, NextAfter(upper)});
  } else if (op == "^") {
    out.push_back({Op::kGreaterEq, p->version});
    Partial upper = *p;
    const Version& v = p->version;
    if (v.major() > 0 || p->given == 1) upper.given = 1;
    else if (v.minor() > 0 || p->given == 2) upper.given = 2;
    else upper.given = 3;
    out.push_back({Op::kLess, NextAfter(upper)});
  }
  return absl::OkStatus();
}

absl::StatusOr<VersionRange> VersionRange::Parse(absl::string_view text) {
  VersionRange range;
  absl::string_view trimmed = absl::StripAsciiWhitespace(text);
  if (trimmed.empty()) {
    return absl::InvalidArgumentError(
        "invalid version range \"\": it is empty; expected comparators such as \">=1.4 <2\"");
  }
  std::vector<std::string> normalised;
  for (absl::string_view alt : absl::StrSplit(trimmed, "||")) {
    std::vector<absl::string_view> tokens = absl::StrSplit(alt, ' ', absl::SkipWhitespace());
    if (tokens.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("invalid version range \"", text,
                                                     "\": an alternative around \"||\" is empty"));
    }
    // Allow ">= 1.4": an operator alone joins the next token.
    std::vector<std::string> joined;
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::string tok(tokens[i]);
      bool only_op = tok.find_first_not_of("<>=^~") == std::string::npos;
      if (only_op && i + 1 < tokens.size()) tok += std::string(tokens[++i]);
      joined.push_back(std::move(tok));
    }
    std::vector<Comparator> set;
    for (const std::string& tok : joined) {
      absl::Status s = ParseComparator(tok, text, set);
      if (!s.ok()) return s;
    }
    range.alternatives_.push_back(std::move(set));
    normalised.push_back(absl::StrJoin(joined, " "));
  }
  range.text_ = absl::StrJoin(normalised, " || ");
  return range;
}

bool VersionRange::Matches(const Comparator& c, const Version& v) {
  switch (c.op) {
    case Op::kEq: return v == c.version;
    case Op::kLess: return v < c.version;
    case Op::kLessEq: return v <= c.version;
    case Op::kGreater: return v > c.version;
    case Op::kGreaterEq: return v >= c.version;
  }
  return false;
}

bool VersionRange::Contains(const Version& v) const {
  for (const auto& set : alternatives_) {
    bool all = true;
    for (const Comparator& c : set) {
      if (!Matches(c, v)) {
        all = false;
        break;
      }
    }
    if (all) return true;
  }
  return false;
}

}  // namespace hoist

#pragma once

// Semantic versions (semver.org 2.0.0) and version ranges such as ">=1.4 <2".
// Releases, compatibility rules and the agent protocol check all use these.

#include <compare>
#include <cstdint>
#include <ostream>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/statusor.h"

namespace hoist {

// Version is MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD].
class Version {
 public:
  Version() = default;
  Version(uint64_t major, uint64_t minor, uint64_t patch)
      : major_(major), minor_(minor), patch_(patch) {}

  // Parses a full version. Refuses partial versions ("1.4"), leading zeros,
  // a leading "v", empty identifiers and characters outside [0-9A-Za-z-.+],
  // naming the input and what was expected.
  static absl::StatusOr<Version> Parse(absl::string_view text);

  uint64_t major() const { return major_; }
  uint64_t minor() const { return minor_; }
  uint64_t patch() const { return patch_; }
  const std::vector<std::string>& prerelease() const { return prerelease_; }
  const std::string& build() const { return build_; }
  bool is_prerelease() const { return !prerelease_.empty(); }

  // The canonical text form.
  std::string ToString() const;

  // Precedence per semver.org section 11: build metadata is ignored, a
  // pre-release sorts before its release, identifiers compare numerically
  // when numeric and lexically otherwise, numeric before alphanumeric.
  std::strong_ordering operator<=>(const Version& other) const;
  bool operator==(const Version& other) const { return (*this <=> other) == 0; }

 private:
  friend class VersionRange;
  uint64_t major_ = 0;
  uint64_t minor_ = 0;
  uint64_t patch_ = 0;
  std::vector<std::string> prerelease_;
  std::string build_;
};

// Prints the canonical text form (for tests and logs).
std::ostream& operator<<(std::ostream& os, const Version& v);

// VersionRange is a set of comparators joined by spaces (all must hold),
// alternatives joined by "||". Comparators: =, >, >=, <, <=, ^ (same major,
// or same minor below 1.0), ~ (same minor), a bare version, and partial
// versions or x/* wildcards ("1.4", "1.x", "*") meaning every version they
// cover. "<2" excludes 2.0.0's pre-releases.
class VersionRange {
 public:
  // Parses a range; the error names the offending comparator.
  static absl::StatusOr<VersionRange> Parse(absl::string_view text);

  // True when v satisfies at least one alternative.
  bool Contains(const Version& v) const;

  // The text it was parsed from, normalised to single spaces.
  const std::string& ToString() const { return text_; }

 private:
  enum class Op { kEq, kLess, kLessEq, kGreater, kGreaterEq };
  struct Comparator {
    Op op;
    Version version;
  };
  static bool Matches(const Comparator& c, const Version& v);
  static absl::Status ParseComparator(absl::string_view token, absl::string_view whole,
                                      std::vector<Comparator>& out);

  std::vector<std::vector<Comparator>> alternatives_;
  std::string text_;
};

}  // namespace hoist

// Reading a manifest's YAML: the shared name checks and Parser's scalar and
// collection readers, each of which names file:line:column and the field
// path in its errors.

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "controller/rollout/manifest_internal.h"
#include "shared/yaml_text.h"

namespace hoist::rollout::internal {

bool IsEnvName(absl::string_view s) {
  if (s.empty() || absl::ascii_isdigit(static_cast<unsigned char>(s.front()))) return false;
  for (char c : s) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '_') return false;
  }
  return true;
}

SourcePos PosOf(const YAML::Node& node) {
  YAML::Mark m = node.Mark();
  if (m.is_null()) return {};
  return {m.line + 1, m.column + 1};
}

std::string Child(absl::string_view path, absl::string_view key) {
  return path.empty() ? std::string(key) : absl::StrCat(path, ".", key);
}

std::string Index(absl::string_view path, size_t i) { return absl::StrCat(path, "[", i, "]"); }

std::string Quote(const YAML::Node& node) {
  if (!node.IsScalar()) return node.IsSequence() ? "a list" : node.IsMap() ? "a mapping" : "nothing";
  std::string s = node.Scalar();
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return absl::StrCat("\"", s, "\"");
}

bool IsDnsLabel(absl::string_view s) {
  if (s.empty() || s.size() > 63) return false;
  for (char c : s) {
    if (!absl::ascii_islower(static_cast<unsigned char>(c)) &&
        !absl::ascii_isdigit(static_cast<unsigned char>(c)) && c != '-') {
      return false;
    }
  }
  return s.front() != '-' && s.back() != '-';
}

absl::Status Parser::ErrorAt(SourcePos pos, absl::string_view path, absl::string_view message) const {
  std::string where = file_;
  if (pos.line > 0) absl::StrAppend(&where, ":", pos.line, ":", pos.column);
  return absl::InvalidArgumentError(
      absl::StrCat(where, ": ", path.empty() ? "" : absl::StrCat(path, ": "), message));
}

absl::StatusOr<YAML::Node> Parser::Load(absl::string_view text, absl::string_view what) const {
  return LoadYamlDocument(file_, text, what);
}

absl::StatusOr<Fields> Parser::MapOf(const YAML::Node& node, const std::string& path,
                                     const std::vector<absl::string_view>& allowed) const {
  if (!node.IsMap()) {
    return Error(node, path,
                 absl::StrCat("expected a mapping with keys ", absl::StrJoin(allowed, ", "),
                              "; got ", Quote(node)));
  }
  Fields f{node, path, {}};
  for (const auto& kv : node) {
    if (!kv.first.IsScalar()) return Error(kv.first, path, "keys must be plain names");
    std::string key = kv.first.Scalar();
    if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
      return Error(kv.first, Child(path, key),
                   absl::StrCat("unknown key; allowed keys here: ", absl::StrJoin(allowed, ", ")));
    }
    if (f.values.contains(key)) {
      return Error(kv.first, Child(path, key),
                   absl::StrCat("set twice (first on line ", PosOf(f.values[key]).line, ")"));
    }
    f.values[key] = kv.second;
  }
  return f;
}

absl::StatusOr<std::vector<std::pair<YAML::Node, YAML::Node>>> Parser::NamedEntries(
    const YAML::Node& node, const std::string& path, absl::string_view what) const {
  if (!node.IsMap()) {
    return Error(node, path, absl::StrCat("expected a mapping of ", what, "; got ", Quote(node)));
  }
  std::vector<std::pair<YAML::Node, YAML::Node>> out;
  std::map<std::string, int> seen;
  for (const auto& kv : node) {
    if (!kv.first.IsScalar() || kv.first.Scalar().empty()) {
      return Error(kv.first, path, absl::StrCat("expected ", what, " names as keys"));
    }
    const std::string& key = kv.first.Scalar();
    if (auto it = seen.find(key); it != seen.end()) {
      return Error(kv.first, Child(path, key),
                   absl::StrCat("duplicate name (first on line ", it->second, ")"));
    }
    seen[key] = PosOf(kv.first).line;
    out.emplace_back(kv.first, kv.second);
  }
  return out;
}

absl::StatusOr<std::string> Parser::String(const YAML::Node& node, const std::string& path,
                                           absl::string_view expected) const {
  if (!node.IsScalar() || node.Scalar().empty()) {
    return Error(node, path, absl::StrCat("expected ", expected, "; got ", Quote(node)));
  }
  return node.Scalar();
}

absl::StatusOr<std::string> Parser::Required(const Fields& f, const std::string& key,
                                             absl::string_view expected) const {
  const YAML::Node* n = f.Get(key);
  if (n == nullptr) {
    return Error(f.self, f.Path(key), absl::StrCat("required; expected ", expected));
  }
  return String(*n, f.Path(key), expected);
}

absl::StatusOr<uint32_t> Parser::Uint(const YAML::Node& node, const std::string& path, uint32_t min,
                                      uint32_t max) const {
  uint32_t v = 0;
  std::string expected = absl::StrCat("a whole number from ", min, " to ", max);
  if (!node.IsScalar() || node.Scalar().find_first_not_of("0123456789") != std::string::npos ||
      !absl::SimpleAtoi(node.Scalar(), &v) || v < min || v > max) {
    return Error(node, path, absl::StrCat("expected ", expected, "; got ", Quote(node)));
  }
  return v;
}

absl::StatusOr<absl::Duration> Parser::Duration(const YAML::Node& node, const std::string& path,
                                                bool allow_zero) const {
  absl::Duration d;
  if (!node.IsScalar() || !absl::ParseDuration(node.Scalar(), &d) ||
      d == absl::InfiniteDuration() || d < absl::ZeroDuration() ||
      (!allow_zero && d == absl::ZeroDuration()) ||
      node.Scalar().find_first_of("hmsun") == std::string::npos) {
    return Error(node, path,
                 absl::StrCat("expected a duration like \"5s\", \"500ms\" or \"2m\"",
                              allow_zero ? "" : " (above zero)", ", got ", Quote(node)));
  }
  return d;
}

absl::StatusOr<bool> Parser::Bool(const YAML::Node& node, const std::string& path) const {
  if (node.IsScalar()) {
    std::string s = absl::AsciiStrToLower(node.Scalar());
    if (s == "true") return true;
    if (s == "false") return false;
  }
  return Error(node, path, absl::StrCat("expected true or false; got ", Quote(node)));
}

absl::StatusOr<std::vector<std::string>> Parser::StringList(const YAML::Node& node, const std::string& path,
                                                            absl::string_view example) const {
  if (!node.IsSequence()) {
    return Error(node, path, absl::StrCat("expected a list like ", example, "; got ", Quote(node)));
  }
  std::vector<std::string> out;
  for (size_t i = 0; i < node.size(); ++i) {
    HOIST_ASSIGN_OR_RETURN(std::string s, String(node[i], Index(path, i)));
    out.push_back(std::move(s));
  }
  return out;
}

absl::StatusOr<std::vector<std::string>> Parser::HostPaths(const YAML::Node& node, const std::string& path,
                                                           absl::string_view example) const {
  return List<std::string>(node, path, example, [&](const YAML::Node& n, const std::string& np) -> absl::StatusOr<std::string> {
    HOIST_ASSIGN_OR_RETURN(std::string s, String(n, np, "an absolute path on the host"));
    if (s.front() != '/') {
      return Error(n, np, absl::StrCat("expected an absolute path on the host; got \"", s, "\""));
    }
    return s;
  });
}

absl::StatusOr<std::vector<std::string>> Parser::Command(const YAML::Node& node, const std::string& path) const {
  HOIST_ASSIGN_OR_RETURN(auto argv, StringList(node, path, "[\"python\", \"migrate.py\"]"));
  if (argv.empty()) return Error(node, path, "expected at least the program to run");
  return argv;
}

absl::StatusOr<std::map<std::string, std::string>> Parser::StringMap(const YAML::Node& node,
                                                                     const std::string& path,
                                                                     absl::string_view what) const {
  HOIST_ASSIGN_OR_RETURN(auto entries, NamedEntries(node, path, what));
  std::map<std::string, std::string> out;
  for (const auto& [k, v] : entries) {
    if (!v.IsScalar()) {
      return Error(v, Child(path, k.Scalar()),
                   absl::StrCat("expected a single value; got ", Quote(v)));
    }
    out[k.Scalar()] = v.Scalar();
  }
  return out;
}

absl::StatusOr<std::map<std::string, std::string>> Parser::EnvMap(const YAML::Node& node,
                                                                  const std::string& path) const {
  HOIST_ASSIGN_OR_RETURN(auto entries, NamedEntries(node, path, "environment variables"));
  std::map<std::string, std::string> out;
  for (const auto& [k, v] : entries) {
    if (!IsEnvName(k.Scalar())) {
      return Error(k, Child(path, k.Scalar()),
                   "expected an environment variable name (letters, digits, _; not starting "
                   "with a digit)");
    }
    if (!v.IsScalar()) {
      // Env values are secrets: the message says what kind of node it is,
      // never what it holds (refusals reach the audit log).
      return Error(v, Child(path, k.Scalar()),
                   absl::StrCat("expected a single value (quote it if it looks like a list); got ",
                                v.IsSequence() ? "a list" : v.IsMap() ? "a map" : "nothing"));
    }
    out[k.Scalar()] = v.Scalar();
  }
  return out;
}

absl::StatusOr<VersionRange> Parser::Range(const YAML::Node& node, const std::string& path) const {
  HOIST_ASSIGN_OR_RETURN(std::string s, String(node, path, "a version range like \">=1.4 <2\""));
  auto r = VersionRange::Parse(s);
  if (!r.ok()) {
    return Error(node, path,
                 absl::StrCat("expected a version range like \">=1.4 <2\"; got ", Quote(node),
                              " (", r.status().message(), ")"));
  }
  return *r;
}

}  // namespace hoist::rollout::internal

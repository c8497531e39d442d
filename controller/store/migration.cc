#include "controller/store/migration.h"

#include <openssl/evp.h>

#include <set>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace hoist {
namespace {

// The SQL with "--" comment lines and blank lines removed, for the
// single-statement check of no-transaction migrations.
std::string StripCommentLines(absl::string_view sql) {
  std::string out;
  for (absl::string_view line : absl::StrSplit(sql, '\n')) {
    absl::string_view t = absl::StripAsciiWhitespace(line);
    if (t.empty() || absl::StartsWith(t, "--")) continue;
    absl::StrAppend(&out, t, "\n");
  }
  return out;
}

}  // namespace

std::string MigrationChecksum(absl::string_view content) {
  std::string normalised = absl::StrReplaceAll(content, {{"\r\n", "\n"}});
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(normalised.data(), normalised.size(), digest, &len, EVP_sha256(), nullptr);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  for (unsigned int i = 0; i < len; ++i) {
    hex += kHex[digest[i] >> 4];
    hex += kHex[digest[i] & 0xf];
  }
  return hex;
}

absl::StatusOr<std::vector<Migration>> ParseMigrations(const std::vector<EmbeddedFile>& files) {
  std::vector<Migration> out;
  std::set<int> seen;
  for (const EmbeddedFile& f : files) {
    auto bad = [&](absl::string_view why) {
      return absl::InvalidArgumentError(absl::StrCat("migration file ", f.name, ": ", why));
    };
    absl::string_view stem = f.name;
    if (!absl::ConsumeSuffix(&stem, ".sql")) return bad("must end in .sql");
    size_t underscore = stem.find('_');
    if (underscore != 4 || stem.size() < 6) return bad("must be named NNNN_name.sql, such as 0002_add_backups.sql");
    int version = 0;
    absl::string_view digits = stem.substr(0, 4);
    if (digits.find_first_not_of("0123456789") != absl::string_view::npos ||
        !absl::SimpleAtoi(digits, &version) || version == 0) {
      return bad("must start with a 4-digit version from 0001");
    }
    std::string name(stem.substr(5));
    for (char c : name) {
      if (!absl::ascii_islower(static_cast<unsigned char>(c)) && !absl::ascii_isdigit(static_cast<unsigned char>(c)) &&
          c != '_') {
        return bad("the name after NNNN_ may hold only a-z, 0-9 and _");
      }
    }
    if (!seen.insert(version).second) return bad(absl::StrCat("version ", version, " is used twice"));
    Migration m;
    m.version = version;
    m.name = name;
    m.file_name = f.name;
    m.sql = absl::StrReplaceAll(f.content, {{"\r\n", "\n"}});
    m.checksum = MigrationChecksum(f.content);
    std::string body = StripCommentLines(m.sql);
    if (body.empty()) return bad("holds no SQL");
    m.no_transaction = absl::StartsWith(m.sql, kNoTransactionMarker);
    if (m.no_transaction) {
      absl::string_view trimmed = absl::StripTrailingAsciiWhitespace(body);
      absl::ConsumeSuffix(&trimmed, ";");
      if (trimmed.find(';') != absl::string_view::npos) {
        return bad("a no-transaction migration must hold exactly one idempotent statement");
      }
    }
    out.push_back(std::move(m));
  }
  std::sort(out.begin(), out.end(), [](const Migration& a, const Migration& b) { return a.version < b.version; });
  return out;
}

absl::string_view MigrationStateName(MigrationState s) {
  switch (s) {
    case MigrationState::kRunning: return "running";
    case MigrationState::kApplied: return "applied";
    case MigrationState::kFailed: return "failed";
  }
  return "unknown";
}

absl::StatusOr<MigrationState> ParseMigrationState(absl::string_view s) {
  if (s == "running") return MigrationState::kRunning;
  if (s == "applied") return MigrationState::kApplied;
  if (s == "failed") return MigrationState::kFailed;
  return absl::DataLossError(absl::StrCat("the migration tracking table holds an unknown state \"", s, "\""));
}

absl::StatusOr<std::vector<Migration>> PendingMigrations(
    const std::vector<Migration>& known, const std::vector<AppliedMigration>& applied) {
  std::map<int, const Migration*> by_version;
  for (const Migration& m : known) by_version[m.version] = &m;
  std::map<int, const AppliedMigration*> done;
  int highest_applied = 0;
  for (const AppliedMigration& a : applied) {
    auto it = by_version.find(a.version);
    if (it == by_version.end()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the database records migration ", a.version, " (", a.name,
          ") that this hoistd does not know: a newer hoistd has run against it. "
          "Run that newer hoistd, or restore the database from before it ran"));
    }
    const Migration& m = *it->second;
    // A no-transaction migration left running lost its runner mid-statement;
    // its one statement is idempotent by contract, so it simply runs again.
    if (a.state == MigrationState::kRunning && m.no_transaction && a.checksum == m.checksum) continue;
    if (a.state == MigrationState::kFailed || a.state == MigrationState::kRunning) {
      return absl::FailedPreconditionError(absl::StrCat(
          "migration ", m.file_name, " was left ", MigrationStateName(a.state),
          a.error.empty() ? "" : absl::StrCat(" (", a.error, ")"),
          ". Fix the cause, then run `hoistd migrate retry ", a.version,
          "` to clear the record so that start-up runs it again"));
    }
    if (a.checksum != m.checksum) {
      return absl::FailedPreconditionError(absl::StrCat(
          "migration ", m.file_name, " was applied with checksum ", a.checksum.substr(0, 12),
          "... but the file embedded in this hoistd has ", m.checksum.substr(0, 12),
          "...: applied migrations must never change. Restore the file as it was and add a new migration"));
    }
    done[a.version] = &a;
    highest_applied = std::max(highest_applied, a.version);
  }
  std::vector<Migration> pending;
  for (const Migration& m : known) {
    if (done.contains(m.version)) continue;
    if (m.version < highest_applied) {
      return absl::FailedPreconditionError(absl::StrCat(
          "migration ", m.file_name, " is not applied but the later migration ", highest_applied,
          " is: new migrations must take a version above every applied one"));
    }
    pending.push_back(m);
  }
  return pending;
}

}  // namespace hoist

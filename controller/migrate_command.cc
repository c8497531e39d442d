#include "controller/migrate_command.h"

#include <iostream>
#include <map>

#include "absl/strings/numbers.h"
#include "absl/time/time.h"

namespace hoist {
namespace {

constexpr const char* kMigrateUsage =
    "Usage: hoistd migrate status|verify|plan|apply|retry VERSION [--database-url URL]\n"
    "  status   every migration this hoistd knows and what the database records\n"
    "  verify   exit 0 when the database matches this hoistd and nothing is pending\n"
    "  plan     print the SQL of pending migrations; runs nothing\n"
    "  apply    apply pending migrations (start-up does this too)\n"
    "  retry N  clear the record of failed or interrupted migration N\n";

std::string FormatUtc(absl::Time t) {
  if (t == absl::InfinitePast()) return "-";
  return absl::FormatTime("%Y-%m-%d %H:%M:%S", t, absl::UTCTimeZone());
}

}  // namespace

int RunMigrateCommand(PgMigrator& migrator, const std::vector<std::string>& args) {
  if (args.empty()) {
    std::cerr << kMigrateUsage;
    return 2;
  }
  const std::string& verb = args[0];
  if (verb == "status") {
    auto applied = migrator.Applied();
    if (!applied.ok()) {
      std::cerr << "hoistd migrate status: " << applied.status().message() << "\n";
      return 1;
    }
    std::map<int, AppliedMigration> by_version;
    for (const auto& a : *applied) by_version[a.version] = a;
    std::printf("%-7s %-32s %-8s %-20s %-8s %s\n", "VERSION", "NAME", "STATE", "FINISHED (UTC)", "TOOK", "BY");
    for (const Migration& m : migrator.migrations()) {
      auto it = by_version.find(m.version);
      if (it == by_version.end()) {
        std::printf("%04d    %-32s %-8s\n", m.version, m.name.c_str(), "pending");
        continue;
      }
      const AppliedMigration& a = it->second;
      std::string state(MigrationStateName(a.state));
      if (a.checksum != m.checksum) state = "CHANGED";
      std::printf("%04d    %-32s %-8s %-20s %5lldms %s\n", m.version, m.name.c_str(), state.c_str(),
                  FormatUtc(a.finished_at).c_str(), static_cast<long long>(a.duration_ms), a.applied_by.c_str());
      if (!a.error.empty()) std::printf("        error: %s\n", a.error.c_str());
      by_version.erase(it);
    }
    for (const auto& [v, a] : by_version) {
      std::printf("%04d    %-32s %-8s (unknown to this hoistd: a newer one ran)\n", v, a.name.c_str(),
                  std::string(MigrationStateName(a.state)).c_str());
    }
    absl::Status s = migrator.Verify();
    return s.ok() ? 0 : 1;
  }
  if (verb == "verify") {
    absl::Status s = migrator.Verify();
    if (!s.ok()) {
      std::cerr << "hoistd migrate verify: " << s.message() << "\n";
      return 1;
    }
    std::cout << "schema is up to date (" << migrator.migrations().size() << " migrations)\n";
    return 0;
  }
  if (verb == "plan") {
    auto pending = migrator.Plan();
    if (!pending.ok()) {
      std::cerr << "hoistd migrate plan: " << pending.status().message() << "\n";
      return 1;
    }
    if (pending->empty()) std::cout << "-- nothing to apply\n";
    for (const Migration& m : *pending) {
      std::cout << "-- " << m.file_name << (m.no_transaction ? " (outside a transaction)" : " (one transaction)")
                << "\n"
                << m.sql << (m.sql.empty() || m.sql.back() == '\n' ? "" : "\n") << "\n";
    }
    return 0;
  }
  if (verb == "apply") {
    auto r = migrator.Migrate();
    if (!r.ok()) {
      std::cerr << "hoistd migrate apply: " << r.status().message() << "\n";
      return 1;
    }
    std::cout << "applied " << r->applied_now.size() << " migration(s); " << r->already_applied
              << " were already applied\n";
    return 0;
  }
  if (verb == "retry") {
    int version = 0;
    if (args.size() != 2 || !absl::SimpleAtoi(args[1], &version) || version <= 0) {
      std::cerr << "hoistd migrate retry: expected one migration version, such as `hoistd migrate retry 3`\n";
      return 2;
    }
    absl::Status s = migrator.Retry(version);
    if (!s.ok()) {
      std::cerr << "hoistd migrate retry: " << s.message() << "\n";
      return 1;
    }
    std::cout << "cleared the record of migration " << version << "; the next start-up runs it again\n";
    return 0;
  }
  std::cerr << "hoistd migrate: unknown verb \"" << verb << "\"\n" << kMigrateUsage;
  return 2;
}

}  // namespace hoist

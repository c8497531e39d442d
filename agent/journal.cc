#include "agent/journal.h"

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "agent/file_util.h"
#include "shared/proto_time.h"

namespace hoist::agent {
namespace {

constexpr absl::string_view kStepSuffix = ".step";
constexpr absl::string_view kResultSuffix = ".result";
constexpr absl::string_view kHeaderPrefix = "hoist-journal-step v1 started_unix_ms=";


// The journal keeps the step to decide it after a restart; env values are
// secrets and nothing after a restart needs them (a container that was never
// created is only created again from a re-sent step, which carries them).
void StripEnvValues(hoist::v1::Step* step) {
  hoist::v1::ContainerSpec* spec = nullptr;
  if (step->has_start_instance()) spec = step->mutable_start_instance()->mutable_spec();
  if (step->has_run_job()) spec = step->mutable_run_job()->mutable_spec();
  if (spec == nullptr) return;
  for (auto& [key, value] : *spec->mutable_env()) value.clear();
}

}  // namespace

StepJournal::StepJournal(std::string state_dir)
    : state_dir_(std::move(state_dir)), journal_dir_(state_dir_ + "/journal") {}

absl::StatusOr<std::unique_ptr<StepJournal>> StepJournal::Open(const std::string& state_dir) {
  if (state_dir.empty()) return absl::InvalidArgumentError("state dir: empty; give the agent a --state-dir");
  std::unique_ptr<StepJournal> journal(new StepJournal(state_dir));
  if (absl::Status s = MakeDirs(journal->journal_dir_); !s.ok()) return s;
  std::string epoch_path = state_dir + "/epoch";
  auto text = ReadFileToString(epoch_path);
  if (text.ok()) {
    uint64_t epoch = 0;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(*text), &epoch)) {
      return absl::DataLossError(absl::StrCat(epoch_path, " does not hold an epoch number; restore it or remove it ",
                                              "only if this agent may accept steps from any leader again"));
    }
    absl::MutexLock lock(&journal->mu_);
    journal->highest_epoch_ = epoch;
  } else if (!absl::IsNotFound(text.status())) {
    return text.status();
  }
  return journal;
}

absl::Status StepJournal::AcceptEpoch(uint64_t epoch) {
  absl::MutexLock lock(&mu_);
  if (epoch < highest_epoch_) {
    return absl::FailedPreconditionError(
        absl::StrCat("step epoch ", epoch, " is older than epoch ", highest_epoch_,
                     " already accepted by this agent: the sender is no longer the leader"));
  }
  if (epoch == highest_epoch_) return absl::OkStatus();
  if (absl::Status s = WriteFileAtomic(state_dir_ + "/epoch", absl::StrCat(epoch, "\n")); !s.ok()) return s;
  highest_epoch_ = epoch;
  return absl::OkStatus();
}

uint64_t StepJournal::highest_epoch() const {
  absl::MutexLock lock(&mu_);
  return highest_epoch_;
}

std::string StepJournal::FileKey(absl::string_view step_id) {
  std::string key;
  for (char c : step_id) {
    if (absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' ||
        (c == '.' && !key.empty())) {
      key.push_back(c);
    } else {
      static constexpr char kHex[] = "0123456789ABCDEF";
      key.push_back('%');
      key.push_back(kHex[static_cast<unsigned char>(c) >> 4]);
      key.push_back(kHex[static_cast<unsigned char>(c) & 0xf]);
    }
  }
  // File names are limited to 255 bytes; long ids are hashed instead.
  if (key.size() > 200) key = "sha256-" + Sha256Hex(step_id);
  return key;
}

std::string StepJournal::StepPath(absl::string_view step_id) const {
  return absl::StrCat(journal_dir_, "/", FileKey(step_id), kStepSuffix);
}

std::string StepJournal::ResultPath(absl::string_view step_id) const {
  return absl::StrCat(journal_dir_, "/", FileKey(step_id), kResultSuffix);
}

absl::Status StepJournal::RecordStarted(const hoist::v1::Step& step, absl::Time started_at) {
  hoist::v1::Step copy = step;
  StripEnvValues(&copy);
  std::string data = absl::StrCat(kHeaderPrefix, absl::ToUnixMillis(started_at), "\n");
  if (!copy.AppendToString(&data)) return absl::InternalError("cannot serialize step " + step.step_id());
  // A result from an earlier run must not outlive the new start record.
  std::string result_path = ResultPath(step.step_id());
  if (PathExists(result_path)) {
    if (absl::Status s = RemoveAll(result_path); !s.ok()) return s;
  }
  return WriteFileAtomic(StepPath(step.step_id()), data);
}

absl::Status StepJournal::RecordResult(const hoist::v1::StepResult& result) {
  std::string data;
  hoist::v1::StepResult copy = result;
  copy.set_replayed(false);
  if (!copy.SerializeToString(&data)) return absl::InternalError("cannot serialize result of step " + result.step_id());
  return WriteFileAtomic(ResultPath(result.step_id()), data);
}

absl::StatusOr<JournalEntry> StepJournal::ReadEntry(const std::string& step_path,
                                                    const std::string& result_path) const {
  JournalEntry entry;
  auto step_data = ReadFileToString(step_path);
  if (!step_data.ok()) return step_data.status();
  absl::string_view rest = *step_data;
  size_t newline = rest.find('\n');
  int64_t millis = 0;
  if (newline == absl::string_view::npos || !absl::StartsWith(rest, kHeaderPrefix) ||
      !absl::SimpleAtoi(rest.substr(kHeaderPrefix.size(), newline - kHeaderPrefix.size()), &millis) ||
      !entry.step.ParseFromArray(rest.data() + newline + 1, static_cast<int>(rest.size() - newline - 1))) {
    return absl::DataLossError(absl::StrCat("journal entry ", step_path, " is corrupt; move it aside to proceed"));
  }
  entry.started_at = absl::FromUnixMillis(millis);
  auto result_data = ReadFileToString(result_path);
  if (result_data.ok()) {
    hoist::v1::StepResult result;
    if (!result.ParseFromString(*result_data)) {
      return absl::DataLossError(absl::StrCat("journal entry ", result_path, " is corrupt; move it aside to proceed"));
    }
    entry.result = std::move(result);
  } else if (!absl::IsNotFound(result_data.status())) {
    return result_data.status();
  }
  return entry;
}

absl::StatusOr<std::optional<JournalEntry>> StepJournal::Lookup(absl::string_view step_id) const {
  std::string step_path = StepPath(step_id);
  if (!PathExists(step_path)) return std::optional<JournalEntry>();
  auto entry = ReadEntry(step_path, ResultPath(step_id));
  if (!entry.ok()) return entry.status();
  return std::optional<JournalEntry>(std::move(*entry));
}

absl::StatusOr<std::vector<JournalEntry>> StepJournal::Interrupted() const {
  auto names = ListDir(journal_dir_);
  if (!names.ok()) return names.status();
  std::vector<JournalEntry> entries;
  for (const std::string& name : *names) {
    if (!absl::EndsWith(name, kStepSuffix)) continue;
    std::string base = name.substr(0, name.size() - kStepSuffix.size());
    std::string result_path = absl::StrCat(journal_dir_, "/", base, kResultSuffix);
    if (PathExists(result_path)) continue;
    auto entry = ReadEntry(absl::StrCat(journal_dir_, "/", name), result_path);
    if (!entry.ok()) return entry.status();
    entries.push_back(std::move(*entry));
  }
  std::sort(entries.begin(), entries.end(),
            [](const JournalEntry& a, const JournalEntry& b) { return a.started_at < b.started_at; });
  return entries;
}

absl::StatusOr<int> StepJournal::PruneFilesBefore(const std::string& dir, absl::Time cutoff) {
  std::error_code ec;
  int removed = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    std::error_code fec;
    if (!e.is_regular_file(fec)) continue;
    struct stat st;
    if (stat(e.path().c_str(), &st) != 0) continue;
    if (absl::TimeFromTimespec(st.st_mtim) >= cutoff) continue;
    if (absl::Status s = RemoveAll(e.path().string()); !s.ok()) return s;
    ++removed;
  }
  if (ec && ec != std::errc::no_such_file_or_directory) {
    return absl::InternalError(absl::StrCat("cannot list ", dir, ": ", ec.message()));
  }
  return removed;
}

absl::StatusOr<int> StepJournal::Prune(absl::Time now, absl::Duration keep) {
  auto names = ListDir(journal_dir_);
  if (!names.ok()) return names.status();
  absl::Time cutoff = now - keep;
  int removed = 0;
  for (const std::string& name : *names) {
    if (absl::EndsWith(name, kResultSuffix)) {
      // A result whose step record is gone: what a crash inside the removal
      // below leaves behind.
      std::string base = name.substr(0, name.size() - kResultSuffix.size());
      if (!PathExists(absl::StrCat(journal_dir_, "/", base, kStepSuffix))) {
        if (absl::Status s = RemoveAll(absl::StrCat(journal_dir_, "/", name)); !s.ok()) return s;
      }
      continue;
    }
    if (!absl::EndsWith(name, kStepSuffix)) continue;
    std::string base = name.substr(0, name.size() - kStepSuffix.size());
    std::string step_path = absl::StrCat(journal_dir_, "/", name);
    std::string result_path = absl::StrCat(journal_dir_, "/", base, kResultSuffix);
    auto entry = ReadEntry(step_path, result_path);
    // A corrupt entry stays for a person to look at.
    if (!entry.ok()) continue;
    absl::Time when = entry->result.has_value() ? ToTime(entry->result->finished_at()) : entry->started_at;
    if (when >= cutoff) continue;
    // The step record goes first: a crash in between leaves an orphan result
    // (removed by the next prune), never an old interrupted entry that a
    // restart would reconcile by running it again.
    if (absl::Status s = RemoveAll(step_path); !s.ok()) return s;
    if (absl::Status s = RemoveAll(result_path); !s.ok()) return s;
    ++removed;
  }
  if (removed > 0) {
    if (absl::Status s = FsyncDir(journal_dir_); !s.ok()) return s;
  }
  return removed;
}

}  // namespace hoist::agent

#pragma once

// StepJournal: the agent's on-disk memory of steps, so that a step re-sent
// after a controller failover or an agent restart returns its recorded result
// instead of running twice, and the fencing epoch survives restarts.
//
// Layout under <state_dir>:
//   epoch                  highest leader epoch accepted, decimal
//   journal/<key>.step     a header line with the start time, then the Step
//                          (env values removed: secrets stay out of the journal)
//   journal/<key>.result   the StepResult, once the step has one
// Every write is crash-safe (temp file, fsync, rename, fsync of the directory).
// All methods are thread-safe.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "hoist/v1/agent.pb.h"

namespace hoist::agent {

// One journaled step.
struct JournalEntry {
  // The step as received, minus env values.
  hoist::v1::Step step;
  absl::Time started_at = absl::InfinitePast();
  // Absent when the step started but never finished (the agent stopped or
  // crashed mid-step): Reconcile decides it from Docker's state.
  std::optional<hoist::v1::StepResult> result;

  bool interrupted() const { return !result.has_value(); }
};

class StepJournal {
 public:
  // Opens the journal in state_dir, creating the directories (mode 0700), and
  // loads the highest epoch. Fails when the directory cannot be created or
  // the epoch file is unreadable (it is never silently reset: that would
  // disable fencing).
  static absl::StatusOr<std::unique_ptr<StepJournal>> Open(const std::string& state_dir);

  const std::string& state_dir() const { return state_dir_; }

  // Fencing. Refuses (FAILED_PRECONDITION, naming both epochs) an epoch lower
  // than the highest accepted; persists a higher one before returning OK.
  absl::Status AcceptEpoch(uint64_t epoch);
  // The highest epoch accepted so far (0 for a new agent).
  uint64_t highest_epoch() const;

  // Records that step is about to run. Overwrites an earlier start record of
  // the same id (a re-run of an interrupted step) and drops any result.
  absl::Status RecordStarted(const hoist::v1::Step& step, absl::Time started_at);
  // Records the final result of a step that was recorded as started.
  absl::Status RecordResult(const hoist::v1::StepResult& result);

  // Returns the entry for step_id, or nullopt when the journal has none.
  absl::StatusOr<std::optional<JournalEntry>> Lookup(absl::string_view step_id) const;

  // Every entry started without a result, oldest first.
  absl::StatusOr<std::vector<JournalEntry>> Interrupted() const;

  // Removes entries that finished before now - keep, and interrupted entries
  // started before it. Returns how many were removed.
  absl::StatusOr<int> Prune(absl::Time now, absl::Duration keep);

  // Removes files directly in `dir` last written before `cutoff` (job
  // records and logs). Returns how many; a missing dir is none.
  static absl::StatusOr<int> PruneFilesBefore(const std::string& dir, absl::Time cutoff);

  // The file-name form of a step id (kept readable where it can be).
  static std::string FileKey(absl::string_view step_id);

 private:
  explicit StepJournal(std::string state_dir);
  std::string StepPath(absl::string_view step_id) const;
  std::string ResultPath(absl::string_view step_id) const;
  absl::StatusOr<JournalEntry> ReadEntry(const std::string& step_path, const std::string& result_path) const;

  const std::string state_dir_;
  const std::string journal_dir_;
  mutable absl::Mutex mu_;
  uint64_t highest_epoch_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace hoist::agent

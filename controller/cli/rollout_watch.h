#pragma once

// Following a rollout: live lines for phases and steps, a progress bar per
// host while images are pulled, and the final summary with the rollback
// command when it failed. Shared by upgrade, watch and rollback.

#include <map>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "absl/time/time.h"
#include "controller/cli/invocation.h"
#include "hoist/v1/operator.pb.h"

namespace hoist::cli {

// RolloutPrinter turns rollout events into lines for people. On a terminal
// the pull progress bars share one line redrawn with \r; elsewhere each bar
// is printed as a plain line whenever it crosses another 10%.
class RolloutPrinter {
 public:
  // `rollout` supplies step descriptions, agents and phase reasons.
  RolloutPrinter(std::ostream& out, bool tty, const hoist::v1::Rollout& rollout, Clock* clock);

  // Renders one event.
  void OnEvent(const hoist::v1::RolloutEvent& event);
  // Clears the live progress line, if one is shown.
  void Finish();

 private:
  struct Bar {
    std::string label;
    uint64_t done = 0, total = 0;
    int printed_decile = -1;
  };
  // A phase with more steps than this (a service on hundreds of hosts) is
  // shown as counts, its failures and its slowest hosts, not a line per step.
  static constexpr int kWidePhase = 24;
  struct WidePhase {
    int total = 0;
    int done = 0;
    int failed = 0;
    int printed_decile = 0;
    std::vector<std::pair<absl::Duration, std::string>> took;  // (time, agent)
  };
  bool Wide(const std::string& phase) const;
  // Prints the summary of the wide phase in progress, if any.
  void EndWidePhase(const hoist::v1::RolloutEvent& event);
  void Line(const hoist::v1::RolloutEvent& event, const std::string& text);
  void ClearLive();
  void DrawLive();
  std::string Elapsed(const hoist::v1::RolloutEvent& event);
  std::string StepText(const hoist::v1::RolloutEvent& event) const;
  std::string Agent(const hoist::v1::RolloutEvent& event) const;

  std::ostream& out_;
  bool tty_;
  Clock* clock_;
  absl::Time base_;
  std::map<std::string, const hoist::v1::PlannedStep*> steps_;
  std::map<std::string, std::string> phase_reasons_;
  std::map<std::string, int> phase_sizes_;
  std::string wide_name_;  // the wide phase in progress ("" when none)
  WidePhase wide_;
  std::map<std::string, absl::Time> step_started_;
  std::map<std::string, Bar> bars_;  // by step id, in step id order
  bool live_shown_ = false;
  hoist::v1::Rollout rollout_;
};

// True for the states a rollout does not leave by itself (GRACE included:
// green serves and the operator decides).
bool RolloutHasEnded(hoist::v1::RolloutState state);

// 0 for SUCCEEDED and GRACE, 1 for every other state.
int RolloutExitCode(hoist::v1::RolloutState state);

// "SUCCEEDED", "FAILED", ... without the enum prefix.
std::string RolloutStateName(hoist::v1::RolloutState state);

// "rolling" or "blue-green".
std::string StrategyName(hoist::v1::Strategy strategy);

// The closing summary: state, duration, failed steps, and on failure the
// exact rollback command.
void PrintRolloutSummary(std::ostream& out, const hoist::v1::Rollout& rollout, absl::Time now, bool colour);

// Streams the rollout's events until it ends (resuming after a broken stream),
// prints the summary and returns RolloutExitCode. Ctrl-C detaches: the
// rollout keeps running, the re-attach command is printed, and 130 returned.
int FollowRollout(Invocation& inv, const hoist::v1::Rollout& rollout);

}  // namespace hoist::cli

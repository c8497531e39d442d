#pragma once

// The order in which services move during a rollout, and which of them must
// stop before the others move. Roles give the default order; `after:`
// constraints and compatibility rules change it. The result is checked by
// simulating every moment of the rollout: no two running instances may ever
// break a rule (pairs that already break it before the rollout are reported,
// not blamed on it).

#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "controller/rollout/manifest.h"
#include "hoist/v1/common.pb.h"

namespace hoist::rollout {

// Default position of a role: job 0, api 1, worker 2, scheduler 3, web 4,
// proxy 5; a database comes first (-1).
int RoleRank(hoist::v1::Role role);

// One move of the rollout: a single service, or a group of services whose
// rules forbid any mix of versions (they stop together, then start in order).
struct MoveUnit {
  std::string name;                  // the first member, or "group-<first>"
  std::vector<std::string> members;  // in start order
  bool together = false;
  // Why this unit sits where it does beyond its role (after:, rules), in words.
  std::vector<std::string> notes;
};

struct MoveOrderInput {
  const StackManifest* manifest = nullptr;
  // Services that move, by name; others (databases, pinned images) stay.
  std::vector<std::string> services;
  // Version running before the rollout; empty when nothing runs (first deploy,
  // or everything was stopped first).
  std::string from_version;
  std::string to_version;
  // How each moving service replaces its instances.
  std::map<std::string, UpdateOrder> update_order;
  // Services stopped before anything moves, and why (the scheduler, by role).
  std::map<std::string, std::string> stopped_first;
};

struct MoveOrder {
  std::vector<MoveUnit> units;
  // Services stopped before anything moves: the input's plus those a rule
  // forced, each with the reason.
  std::map<std::string, std::string> stopped_first;
  std::vector<std::string> warnings;
};

// Orders the moves. FAILED_PRECONDITION when the target release breaks a rule
// by itself, when after: constraints and rules conflict (naming the cycle), or
// when no order keeps the rules.
absl::StatusOr<MoveOrder> OrderMoves(const MoveOrderInput& input);

}  // namespace hoist::rollout

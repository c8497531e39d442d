#pragma once

// The fencing check every leader-only write runs inside its own transaction.

#include <cstdint>

#include <pqxx/pqxx>

#include "absl/status/status.h"

namespace hoist {

// Re-reads the leader epoch FOR SHARE in `tx` (a real transaction: in
// autocommit the row lock would end with the SELECT) (so that no new leader can bump
// it before `tx` ends) and fails with FAILED_PRECONDITION when it is not
// `epoch`: the caller no longer leads and must not write.
absl::Status CheckEpoch(pqxx::dbtransaction& tx, uint64_t epoch);

}  // namespace hoist

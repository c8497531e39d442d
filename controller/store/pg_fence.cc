#include "controller/store/pg_fence.h"

#include "absl/strings/str_cat.h"

namespace hoist {

absl::Status CheckEpoch(pqxx::dbtransaction& tx, uint64_t epoch) {
  // FOR KEY SHARE: an epoch bump (which takes the row FOR UPDATE first)
  // waits for this transaction, while the leader's heartbeat (an UPDATE of a
  // column that is no key) does not, so a long write never costs the lease.
  uint64_t current = tx.exec1("SELECT epoch FROM hoist_leader WHERE id = 1 FOR KEY SHARE")[0].as<uint64_t>();
  if (current != epoch || epoch == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "fenced: this replica acted for leader epoch ", epoch, " but the current epoch is ", current,
        "; it no longer leads"));
  }
  return absl::OkStatus();
}

}  // namespace hoist

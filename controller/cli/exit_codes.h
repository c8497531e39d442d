#pragma once

// The hoist CLI's exit codes, documented in `hoist --help` and README.md.
namespace hoist::cli {

inline constexpr int kExitOk = 0;
// The operation ran and failed: a rollout failed or was cancelled, the
// controller refused (FAILED_PRECONDITION, ALREADY_EXISTS, ...).
inline constexpr int kExitFailed = 1;
// Bad usage: an unknown flag, a bad value, an invalid file.
inline constexpr int kExitUsage = 2;
// What was named does not exist (deployment, release, rollout, backup).
inline constexpr int kExitNotFound = 3;
// hoistd refused the caller: its certificate's role or level does not allow
// the call, or the certificate is revoked (sysexits EX_NOPERM).
inline constexpr int kExitPermission = 77;
// No controller answered (sysexits EX_UNAVAILABLE).
inline constexpr int kExitUnavailable = 69;
// Interrupted by Ctrl-C; a watched rollout keeps running.
inline constexpr int kExitInterrupted = 130;

}  // namespace hoist::cli

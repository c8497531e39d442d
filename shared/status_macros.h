#pragma once

// Early-return helpers for absl::Status and absl::StatusOr, where parsing,
// checking and planning chain many fallible calls (the manifest, the planner,
// the agent's step checks).

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define HOIST_STATUS_CONCAT_INNER(a, b) a##b
#define HOIST_STATUS_CONCAT(a, b) HOIST_STATUS_CONCAT_INNER(a, b)

// Returns the status from the enclosing function when it is not OK.
#define HOIST_RETURN_IF_ERROR(expr)         \
  do {                                      \
    ::absl::Status hoist_status_ = (expr);  \
    if (!hoist_status_.ok()) return hoist_status_; \
  } while (0)

// Declares or assigns `lhs` from a StatusOr, returning its status when not OK.
#define HOIST_ASSIGN_OR_RETURN(lhs, expr) \
  HOIST_ASSIGN_OR_RETURN_IMPL(HOIST_STATUS_CONCAT(hoist_statusor_, __LINE__), lhs, expr)
#define HOIST_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                \
  if (!tmp.ok()) return tmp.status();               \
  lhs = std::move(*tmp)

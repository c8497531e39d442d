#pragma once

// Helpers shared by the files of PgRolloutStore (pg_rollout_store*.cc): how
// times and protobuf messages travel to and from Postgres.

#include <cstdint>
#include <string>

#include <pqxx/pqxx>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "google/protobuf/message.h"

namespace hoist::pg_rollout_internal {

// Timestamps travel as microseconds since the epoch (NULL as 0).
inline constexpr const char* kMicros = "COALESCE((extract(epoch FROM {}) * 1000000)::bigint, 0)";

inline std::string Micros(absl::string_view column) {
  std::string s(kMicros);
  return s.replace(s.find("{}"), 2, std::string(column));
}

inline absl::Time FromMicros(int64_t micros) {
  return micros == 0 ? absl::InfinitePast() : absl::FromUnixMicros(micros);
}

inline std::string Bytes(const google::protobuf::Message& m) { return m.SerializeAsString(); }

template <typename M>
absl::StatusOr<M> Parse(const pqxx::field& f, absl::string_view what) {
  M m;
  pqxx::binarystring b(f);
  if (!m.ParseFromArray(b.data(), static_cast<int>(b.size()))) {
    return absl::DataLossError(absl::StrCat("stored ", what, " does not parse"));
  }
  return m;
}

}  // namespace hoist::pg_rollout_internal

#pragma once

// Release files: the YAML an operator writes for `hoist release create`.
//
//   deployment: shop            # optional when -d or the only deployment says it
//   version: 1.5.0              # semantic version
//   images:                     # image per service, pinned (a tag other than latest, or a digest)
//     api: registry.local/shop-api:1.5.0
//   notes: |                    # release notes, Markdown (optional)
//     ...
//   required_env: [SHOP_KEY]    # env vars the release needs (optional)
//   renamed_env:                # old name: new name (optional)
//     SHOP_TOKEN: SHOP_API_TOKEN

#include <cstdint>
#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "hoist/v1/operator.pb.h"

namespace hoist::rollout {

// Parses and checks a release file. Errors are INVALID_ARGUMENT and read
// "FILE:LINE: FIELD: what is wrong; what to write instead". Unknown keys,
// duplicate keys, a bad version, unpinned images and bad env names are errors.
// When `field_lines` is given, it receives the line of each top-level key and
// of each image ("images.api"), for CreateReleaseRequest.field_lines.
absl::StatusOr<hoist::v1::Release> ParseReleaseFile(absl::string_view file_name, absl::string_view text,
                                                    std::map<std::string, uint32_t>* field_lines = nullptr);

// Reads a release file and parses it; NOT_FOUND when it cannot be read.
absl::StatusOr<hoist::v1::Release> LoadReleaseFile(const std::string& path);

}  // namespace hoist::rollout

#pragma once

// The checks every YAML file Hoist reads (stack manifests, release files,
// config files) passes before it is parsed: a size limit, UTF-8, and exactly
// one YAML document. Each error names the file and, where there is one, the
// line and column, and says what to do.

#include <cstddef>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "yaml-cpp/yaml.h"

namespace hoist {

// Manifests and release files larger than this are refused (by the CLI before
// it sends them, and by hoistd). gRPC's own limit (4 MiB) is well above it.
inline constexpr size_t kMaxYamlFileBytes = 1 << 20;

// Checks size and encoding only. `what` names the kind of file ("stack
// manifest", "release file") in the errors.
absl::Status CheckYamlText(absl::string_view file, absl::string_view text, absl::string_view what,
                           size_t max_bytes = kMaxYamlFileBytes);

// CheckYamlText, then parses `text` as one YAML document (a file holding
// several, separated by `---`, is refused: the others would be ignored).
// An empty file gives a null node.
absl::StatusOr<YAML::Node> LoadYamlDocument(absl::string_view file, absl::string_view text, absl::string_view what,
                                            size_t max_bytes = kMaxYamlFileBytes);

}  // namespace hoist

// libFuzzer target: the release file parser on arbitrary bytes. Any input
// must end in a release or an error Status, never a crash, a hang or a
// sanitizer report. Run with tests/fuzz/run.sh.

#include <cstddef>
#include <cstdint>
#include "absl/strings/string_view.h"

#include "controller/rollout/release_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::string_view text(reinterpret_cast<const char*>(data), size);
  auto release = hoist::rollout::ParseReleaseFile("fuzz-release.yaml", text);
  if (release.ok() && release->version().empty()) __builtin_trap();  // a release always has a version
  return 0;
}

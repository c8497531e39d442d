// libFuzzer target: the stack manifest parser on arbitrary bytes. Any input
// must end in a manifest or an error Status, never a crash, a hang or a
// sanitizer report. Run with tests/fuzz/run.sh.

#include <cstddef>
#include <cstdint>
#include "absl/strings/string_view.h"

#include "controller/rollout/manifest.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::string_view text(reinterpret_cast<const char*>(data), size);
  auto manifest = hoist::rollout::ParseStackManifest("fuzz.yaml", text);
  if (manifest.ok() && manifest->deployment.empty()) __builtin_trap();  // a manifest always names its deployment
  return 0;
}

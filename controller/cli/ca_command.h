#pragma once

#include <ostream>
#include <string>
#include <vector>

namespace hoist {

// Runs `hoist ca init|issue ...` with the arguments after "ca", printing what
// was written to `out` and problems to `err`. Returns 0 when done, 1 when it
// failed (an existing CA, unreadable files), 2 for bad usage (unknown
// sub-command or flag, a bad name, SAN or --days).
int RunCaCommand(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

}  // namespace hoist

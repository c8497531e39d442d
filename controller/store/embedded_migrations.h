#pragma once

// The migrations/*.sql files, embedded at build time.

#include <string>
#include <vector>

namespace hoist {

struct EmbeddedFile {
  std::string name;     // file name, such as "0001_initial.sql"
  std::string content;  // exact bytes
};

// Every migrations/*.sql file, sorted by name.
const std::vector<EmbeddedFile>& EmbeddedMigrationFiles();

}  // namespace hoist

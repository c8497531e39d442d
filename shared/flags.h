#pragma once

// A small command-line parser shared by hoistd, hoist-agent and hoist: long
// flags (--name=value, --name value, --bool), an env var fallback per flag,
// positional arguments, and generated --help text. Every error names the flag
// and what it expected.

#include <functional>
#include <map>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/statusor.h"

namespace hoist {

class FlagSet {
 public:
  // `usage` is the first help line ("hoistd [flags]"); `summary` follows it.
  FlagSet(std::string usage, std::string summary);

  // Declares a flag taking a value. `env` (may be empty) is read when the flag
  // is absent; `def` is the default shown in help.
  void AddString(std::string name, std::string def, std::string help, std::string env = "");
  // Declares a boolean flag (--name, --name=true/false).
  void AddBool(std::string name, std::string help, std::string env = "");
  // Declares a flag that may be given several times (--san a --san b); each
  // value may also hold a comma-separated list. No env fallback.
  void AddList(std::string name, std::string help);
  // Adds an example line to the help text.
  void AddExample(std::string example);

  // Parses argv (without the program name). Unknown flags and missing or bad
  // values are INVALID_ARGUMENT. "--help" stops parsing and sets
  // help_requested(). Arguments after "--" are positional.
  absl::Status Parse(const std::vector<std::string>& args);

  // True when --help or -h was given; Parse then stops early.
  bool help_requested() const { return help_requested_; }
  // The value of a declared flag (given, from env, or default).
  const std::string& Get(absl::string_view name) const;
  bool GetBool(absl::string_view name) const;
  // Every value of a list flag, in order, commas split, empty items dropped.
  const std::vector<std::string>& GetList(absl::string_view name) const;
  // Whether the flag was given on the command line or by env.
  bool IsSet(absl::string_view name) const;
  const std::vector<std::string>& positional() const { return positional_; }

  std::string Help() const;

 private:
  struct Flag {
    std::string name, def, help, env, value;
    bool is_bool = false;
    bool is_list = false;
    std::vector<std::string> values;  // list flags
    bool set = false;
  };
  Flag* Find(absl::string_view name);
  const Flag& Lookup(absl::string_view name) const;

  std::string usage_, summary_;
  std::vector<std::string> order_;
  std::map<std::string, Flag, std::less<>> flags_;
  std::vector<std::string> examples_;
  std::vector<std::string> positional_;
  bool help_requested_ = false;
};

}  // namespace hoist

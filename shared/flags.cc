#include "shared/flags.h"

#include <cstdlib>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_split.h"
#include "shared/config.h"

namespace hoist {

FlagSet::FlagSet(std::string usage, std::string summary)
    : usage_(std::move(usage)), summary_(std::move(summary)) {}

void FlagSet::AddString(std::string name, std::string def, std::string help, std::string env) {
  order_.push_back(name);
  Flag f{name, def, std::move(help), std::move(env), def};
  flags_[std::move(name)] = std::move(f);
}

void FlagSet::AddBool(std::string name, std::string help, std::string env) {
  order_.push_back(name);
  Flag f{name, "false", std::move(help), std::move(env), "false"};
  f.is_bool = true;
  flags_[std::move(name)] = std::move(f);
}

void FlagSet::AddList(std::string name, std::string help) {
  order_.push_back(name);
  Flag f{name, "", std::move(help), "", ""};
  f.is_list = true;
  flags_[std::move(name)] = std::move(f);
}

void FlagSet::AddExample(std::string example) { examples_.push_back(std::move(example)); }

FlagSet::Flag* FlagSet::Find(absl::string_view name) {
  auto it = flags_.find(name);
  return it == flags_.end() ? nullptr : &it->second;
}

const FlagSet::Flag& FlagSet::Lookup(absl::string_view name) const {
  auto it = flags_.find(name);
  if (it == flags_.end()) {
    // A programming error, not user input: every Get names a declared flag.
    std::abort();
  }
  return it->second;
}

absl::Status FlagSet::Parse(const std::vector<std::string>& args) {
  for (auto& [name, f] : flags_) {
    if (!f.env.empty()) {
      if (const char* v = std::getenv(f.env.c_str()); v != nullptr && *v != '\0') {
        if (f.is_bool) {
          auto b = ParseBoolSetting(f.env, v);
          if (!b.ok()) return b.status();
          f.value = *b ? "true" : "false";
        } else {
          f.value = v;
        }
        f.set = true;
      }
    }
  }
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--") {
      positional_.insert(positional_.end(), args.begin() + i + 1, args.end());
      break;
    }
    if (a == "--help" || a == "-h") {
      help_requested_ = true;
      return absl::OkStatus();
    }
    if (!absl::StartsWith(a, "--") || a.size() == 2) {
      if (absl::StartsWith(a, "-") && a.size() > 1) {
        return absl::InvalidArgumentError(
            absl::StrCat("unknown flag \"", a, "\": flags are long, such as --help"));
      }
      positional_.push_back(a);
      continue;
    }
    std::string name = a.substr(2);
    std::string value;
    bool has_value = false;
    if (size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    Flag* f = Find(name);
    if (f == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown flag --", name, "; see --help for the flags this command takes"));
    }
    if (f->is_bool) {
      if (has_value) {
        auto b = ParseBoolSetting(absl::StrCat("--", name), value);
        if (!b.ok()) return b.status();
        f->value = *b ? "true" : "false";
      } else {
        f->value = "true";
      }
    } else {
      if (!has_value) {
        if (i + 1 >= args.size()) {
          return absl::InvalidArgumentError(absl::StrCat("flag --", name, " needs a value"));
        }
        value = args[++i];
      }
      f->value = value;
      if (f->is_list) {
        for (absl::string_view item : absl::StrSplit(value, ',', absl::SkipWhitespace())) {
          f->values.emplace_back(absl::StripAsciiWhitespace(item));
        }
      }
    }
    f->set = true;
  }
  return absl::OkStatus();
}

const std::string& FlagSet::Get(absl::string_view name) const { return Lookup(name).value; }

bool FlagSet::GetBool(absl::string_view name) const { return Lookup(name).value == "true"; }

const std::vector<std::string>& FlagSet::GetList(absl::string_view name) const { return Lookup(name).values; }

bool FlagSet::IsSet(absl::string_view name) const { return Lookup(name).set; }

std::string FlagSet::Help() const {
  std::string out = absl::StrCat("Usage: ", usage_, "\n\n", summary_, "\n");
  if (!order_.empty()) out += "\nFlags:\n";
  for (const auto& name : order_) {
    const Flag& f = Lookup(name);
    std::string left = absl::StrCat("  --", f.name, f.is_bool ? "" : " VALUE", f.is_list ? "..." : "");
    if (left.size() < 28) left.resize(28, ' ');
    else left += "\n" + std::string(28, ' ');
    absl::StrAppend(&out, left, f.help);
    if (!f.is_bool && !f.def.empty()) absl::StrAppend(&out, " (default ", f.def, ")");
    if (!f.env.empty()) absl::StrAppend(&out, " [env ", f.env, "]");
    out += "\n";
  }
  absl::StrAppend(&out, "  --help                    Show this help.\n");
  if (!examples_.empty()) {
    out += "\nExamples:\n";
    for (const auto& e : examples_) absl::StrAppend(&out, "  ", e, "\n");
  }
  return out;
}

}  // namespace hoist

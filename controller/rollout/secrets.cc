#include "controller/rollout/secrets.h"

#include <yaml-cpp/yaml.h>

#include "absl/strings/str_cat.h"

namespace hoist::rollout {

std::string RedactEnvValues(absl::string_view manifest_yaml,
                            const std::function<std::string(absl::string_view)>& fingerprint) {
  YAML::Node root;
  try {
    root = YAML::Load(std::string(manifest_yaml));
  } catch (const YAML::Exception&) {
    return "# (the stored manifest does not parse; not shown)\n";
  }
  auto redact = [&](YAML::Node service) {
    if (!service.IsMap()) return;
    YAML::Node env = service["env"];
    if (!env.IsMap()) return;
    for (auto it = env.begin(); it != env.end(); ++it) {
      const std::string value = it->second.IsScalar() ? it->second.Scalar() : YAML::Dump(it->second);
      const std::string print = fingerprint(value);
      it->second = print.empty() ? std::string("(secret)") : absl::StrCat("(secret ", print, ")");
    }
  };
  if (root.IsMap()) {
    YAML::Node services = root["services"];
    if (services.IsMap()) {
      for (auto it = services.begin(); it != services.end(); ++it) redact(it->second);
    } else if (services.IsSequence()) {
      for (auto it = services.begin(); it != services.end(); ++it) redact(*it);
    }
  }
  YAML::Emitter out;
  out << root;
  return absl::StrCat(out.c_str(), "\n");
}

absl::Status TransformStepEnv(hoist::v1::Step* step,
                              const std::function<absl::StatusOr<std::string>(const std::string&)>& f) {
  hoist::v1::ContainerSpec* spec = nullptr;
  if (step->has_start_instance()) spec = step->mutable_start_instance()->mutable_spec();
  if (step->has_run_job()) spec = step->mutable_run_job()->mutable_spec();
  if (spec == nullptr) return absl::OkStatus();
  for (auto& [name, value] : *spec->mutable_env()) {
    absl::StatusOr<std::string> next = f(value);
    if (!next.ok()) return absl::Status(next.status().code(), absl::StrCat("env ", name, ": ", next.status().message()));
    value = *std::move(next);
  }
  return absl::OkStatus();
}

}  // namespace hoist::rollout

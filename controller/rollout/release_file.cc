#include "controller/rollout/release_file.h"

#include <set>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "controller/rollout/manifest_internal.h"
#include "shared/semver.h"
#include "shared/yaml_text.h"
#include "yaml-cpp/yaml.h"

namespace hoist::rollout {
namespace {

constexpr const char* kKnownKeys = "deployment, version, images, notes, required_env, renamed_env";

// True when an image reference names a tag other than "latest" or a digest.
// The rule `hoist release create` has always applied; it is looser than
// ParseImageReference (it does not check the repository part).
bool IsPinnedImage(absl::string_view image) {
  if (absl::StrContains(image, "@sha256:")) return true;
  size_t slash = image.rfind('/');
  size_t colon = image.rfind(':');
  if (colon == absl::string_view::npos || (slash != absl::string_view::npos && colon < slash)) return false;
  absl::string_view tag = image.substr(colon + 1);
  return !tag.empty() && tag != "latest";
}

class ReleaseParser {
 public:
  ReleaseParser(absl::string_view file_name, std::map<std::string, uint32_t>* lines)
      : file_(file_name), lines_(lines) {}

  void Remember(const std::string& field, const YAML::Node& at) {
    if (lines_ != nullptr && !at.Mark().is_null()) (*lines_)[field] = static_cast<uint32_t>(at.Mark().line + 1);
  }

  absl::Status Error(const YAML::Node& at, absl::string_view field, absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat(file_, ":", at.Mark().line + 1, ": ", field, ": ", what));
  }

  absl::StatusOr<std::string> Scalar(const YAML::Node& node, absl::string_view field) const {
    if (!node.IsScalar()) return Error(node, field, "expected a single value, not a list or mapping");
    return node.Scalar();
  }

  absl::Status EnvName(const YAML::Node& node, absl::string_view field) const {
    auto name = Scalar(node, field);
    if (!name.ok()) return name.status();
    if (!internal::IsEnvName(*name)) {
      return Error(node, field,
                   absl::StrCat("\"", *name, "\" is not an environment variable name; use letters, digits and _, "
                                             "not starting with a digit"));
    }
    return absl::OkStatus();
  }

  // Checks that a mapping has no key twice (yaml-cpp keeps the last silently).
  absl::Status NoDuplicates(const YAML::Node& map, absl::string_view field) const {
    std::set<std::string> seen;
    for (const auto& kv : map) {
      if (!kv.first.IsScalar()) return Error(kv.first, field, "keys must be plain names");
      if (!seen.insert(kv.first.Scalar()).second) {
        return Error(kv.first, field, absl::StrCat("\"", kv.first.Scalar(), "\" is given twice"));
      }
    }
    return absl::OkStatus();
  }

  // images: service name to a pinned image; `key` is the images key itself.
  absl::Status Images(const YAML::Node& key, const YAML::Node& value, hoist::v1::Release& release) {
    if (!value.IsMap() || value.size() == 0) {
      return Error(value.IsNull() ? key : value, "images",
                   "expected a mapping of service name to image, such as `api: registry.local/shop-api:1.5.0`");
    }
    if (auto s = NoDuplicates(value, "images"); !s.ok()) return s;
    for (const auto& img : value) {
      std::string field = absl::StrCat("images.", img.first.Scalar());
      Remember(field, img.first);
      auto ref = Scalar(img.second, field);
      if (!ref.ok()) return ref.status();
      if (ref->empty() || absl::StrContains(*ref, ' ')) {
        return Error(img.second, field, "expected an image reference such as registry.local/shop-api:1.5.0");
      }
      if (!IsPinnedImage(*ref)) {
        return Error(img.second, field,
                     absl::StrCat("\"", *ref,
                                  "\" is not pinned; name a version tag (not latest) such as :1.5.0, or a "
                                  "digest @sha256:..."));
      }
      (*release.mutable_images())[img.first.Scalar()] = *ref;
    }
    return absl::OkStatus();
  }

  absl::Status RequiredEnv(const YAML::Node& value, hoist::v1::Release& release) const {
    if (!value.IsSequence()) {
      return Error(value, "required_env", "expected a list of env var names, such as [SHOP_KEY]");
    }
    for (const auto& item : value) {
      if (auto s = EnvName(item, "required_env"); !s.ok()) return s;
      release.add_required_env(item.Scalar());
    }
    return absl::OkStatus();
  }

  absl::Status RenamedEnv(const YAML::Node& value, hoist::v1::Release& release) const {
    if (!value.IsMap()) return Error(value, "renamed_env", "expected a mapping of old name to new name");
    if (auto s = NoDuplicates(value, "renamed_env"); !s.ok()) return s;
    for (const auto& r : value) {
      std::string field = absl::StrCat("renamed_env.", r.first.Scalar());
      if (auto s = EnvName(r.first, "renamed_env"); !s.ok()) return s;
      if (auto s = EnvName(r.second, field); !s.ok()) return s;
      (*release.mutable_renamed_env())[r.first.Scalar()] = r.second.Scalar();
    }
    return absl::OkStatus();
  }

  absl::StatusOr<hoist::v1::Release> Parse(absl::string_view text) {
    auto loaded = LoadYamlDocument(file_, text, "release file");
    if (!loaded.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(loaded.status().message(), "; see hoist release create --help"));
    }
    YAML::Node root = *loaded;
    if (!root.IsMap()) {
      return absl::InvalidArgumentError(absl::StrCat(
          file_, ":", root.IsNull() ? 1 : root.Mark().line + 1,
          ": expected a mapping with version and images; see hoist release create --help for an example"));
    }
    if (auto s = NoDuplicates(root, "release"); !s.ok()) return s;
    hoist::v1::Release release;
    bool has_version = false, has_images = false;
    for (const auto& kv : root) {
      const std::string key = kv.first.Scalar();
      const YAML::Node& value = kv.second;
      Remember(key, kv.first);
      if (key == "deployment") {
        auto v = Scalar(value, key);
        if (!v.ok()) return v.status();
        if (v->empty()) return Error(value, key, "is empty; name the deployment or leave the key out");
        release.set_deployment(*v);
      } else if (key == "version") {
        auto v = Scalar(value, key);
        if (!v.ok()) return v.status();
        auto parsed = Version::Parse(*v);
        if (!parsed.ok()) return Error(value, key, parsed.status().message());
        release.set_version(*v);
        has_version = true;
      } else if (key == "images") {
        if (auto s = Images(kv.first, value, release); !s.ok()) return s;
        has_images = true;
      } else if (key == "notes") {
        auto v = Scalar(value, key);
        if (!v.ok()) return v.status();
        release.set_notes(*v);
      } else if (key == "required_env") {
        if (auto s = RequiredEnv(value, release); !s.ok()) return s;
      } else if (key == "renamed_env") {
        if (auto s = RenamedEnv(value, release); !s.ok()) return s;
      } else {
        return Error(kv.first, key, absl::StrCat("unknown key; a release file has ", kKnownKeys));
      }
    }
    if (!has_version) return Error(root, "version", "missing; add `version: 1.5.0` (a semantic version)");
    if (!has_images) return Error(root, "images", "missing; add `images:` with one `service: image:tag` per service");
    return release;
  }

 private:
  std::string file_;
  std::map<std::string, uint32_t>* lines_;
};

}  // namespace

absl::StatusOr<hoist::v1::Release> ParseReleaseFile(absl::string_view file_name, absl::string_view text,
                                                    std::map<std::string, uint32_t>* field_lines) {
  // yaml-cpp reports misuse by exception; none may cross into the caller.
  try {
    return ReleaseParser(file_name, field_lines).Parse(text);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(file_name, ":", e.mark.line + 1, ": cannot read the release file (", e.msg, ")"));
  }
}

absl::StatusOr<hoist::v1::Release> LoadReleaseFile(const std::string& path) {
  auto text = internal::ReadTextFile(path);
  if (!text.ok()) return text.status();
  return ParseReleaseFile(path, *text);
}

}  // namespace hoist::rollout

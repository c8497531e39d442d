// hoist apply, release create, release show, releases.
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "controller/cli/commands.h"
#include "controller/cli/exit_codes.h"
#include "controller/cli/table.h"
#include "controller/rollout/release_file.h"
#include "shared/yaml_text.h"

namespace hoist::cli {
namespace {

namespace v1 = hoist::v1;
using Stub = OperatorClient::Stub;

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("cannot read ", path, ": no such file or no permission"));
  std::stringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

// Sorted by service name, so output is stable (proto maps are not).
std::vector<std::pair<std::string, std::string>> Sorted(const google::protobuf::Map<std::string, std::string>& m) {
  std::vector<std::pair<std::string, std::string>> out(m.begin(), m.end());
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

int RunApply(const Args& args, CliIo& io) {
  Invocation inv("apply", io);
  FlagSet flags("hoist apply FILE [flags]",
                "Validates a stack manifest and stores it as its deployment's stack.\n"
                "The deployment is named in the manifest; hoistd reports any problem as FILE:LINE: field.");
  flags.AddExample("hoist apply stack.yaml");
  flags.AddExample("hoist apply deploy/shop.yaml --controller ctl-1:7443,ctl-2:7443");
  if (auto code = inv.Parse(flags, args, 1, 1, "FILE (the stack manifest)")) return *code;
  const std::string& path = inv.args()[0];
  auto text = ReadFile(path);
  if (!text.ok()) return inv.Fail(text.status());
  // Size and encoding are checked here: gRPC cannot carry text that is not
  // UTF-8, and hoistd would refuse a file over the limit only after the upload.
  if (absl::Status s = CheckYamlText(path, *text, "stack manifest"); !s.ok()) return inv.Fail(s);
  v1::ApplyStackRequest req;
  req.set_manifest_yaml(*text);
  req.set_file_name(path);
  v1::ApplyStackResponse resp;
  if (auto code = inv.Fetch("ApplyStack", &Stub::ApplyStack, req, &resp)) return *code;
  const v1::Deployment& d = resp.deployment();
  inv.out() << "Applied " << path << " as deployment " << d.name() << "\n"
            << "  manifest sha256  " << d.manifest_sha256() << "\n"
            << "  pinned version   "
            << (d.pinned_version().empty() ? "none yet: hoist release create FILE, then hoist upgrade VERSION"
                                           : d.pinned_version())
            << "\n";
  return kExitOk;
}

int RunReleaseCreate(const Args& args, CliIo& io) {
  Invocation inv("release create", io);
  FlagSet flags("hoist release create FILE [flags]",
                "Records a release from a YAML file: its version, an image per service, notes and env changes.\n"
                "\n"
                "  deployment: shop              # optional with -d, or when hoistd has one deployment\n"
                "  version: 1.5.0                # semantic version\n"
                "  images:                       # pinned: a version tag (not latest) or a digest\n"
                "    api: registry.local/shop-api:1.5.0\n"
                "    worker: registry.local/shop-worker:1.5.0\n"
                "  notes: |                      # Markdown, shown by hoist plan\n"
                "    Adds invoices. Migration 0042 rewrites the orders table.\n"
                "  required_env: [SHOP_SMTP_URL] # env vars the release needs\n"
                "  renamed_env:                  # old name: new name\n"
                "    SHOP_TOKEN: SHOP_API_TOKEN\n"
                "\n"
                "Unknown keys are errors; every error names FILE:LINE and the field.");
  flags.AddExample("hoist release create releases/1.5.0.yaml");
  flags.AddExample("hoist release create 1.5.0.yaml -d shop --output json");
  if (auto code = inv.Parse(flags, args, 1, 1, "FILE (the release file)")) return *code;
  const std::string& path = inv.args()[0];
  auto text = ReadFile(path);
  if (!text.ok()) return inv.Fail(text.status());
  std::map<std::string, uint32_t> lines;
  auto release = rollout::ParseReleaseFile(path, *text, &lines);
  if (!release.ok()) return inv.Fail(release.status());
  if (release->deployment().empty()) {
    auto name = inv.Deployment();
    if (!name.ok()) return inv.Fail(name.status());
    release->set_deployment(*name);
  } else if (!inv.options().deployment.empty() && inv.options().deployment != release->deployment()) {
    return inv.Usage(absl::StrCat(path, " is a release of ", release->deployment(), " but --deployment says ",
                                  inv.options().deployment, "; drop one of them"));
  }
  v1::CreateReleaseRequest req;
  *req.mutable_release() = *release;
  req.set_file_name(path);
  req.mutable_field_lines()->insert(lines.begin(), lines.end());
  v1::CreateReleaseResponse resp;
  if (auto code = inv.Fetch("CreateRelease", &Stub::CreateRelease, req, &resp,
                            absl::StrCat("no deployment named ", release->deployment(),
                                    "? create it with `hoist apply stack.yaml` first"))) {
    return *code;
  }
  const v1::Release& r = resp.release();
  inv.out() << "Recorded release " << r.version() << " of " << r.deployment() << " (" << r.images_size()
            << (r.images_size() == 1 ? " image" : " images") << ")\n"
            << "Next: hoist plan " << r.version() << " -d " << r.deployment() << "\n";
  return kExitOk;
}

int RunReleaseShow(const Args& args, CliIo& io) {
  Invocation inv("release show", io);
  FlagSet flags("hoist release show VERSION [flags]",
                "Shows one release: images and digests, env changes and release notes.");
  flags.AddExample("hoist release show 1.5.0");
  flags.AddExample("hoist release show 1.5.0 -d shop --output json");
  if (auto code = inv.Parse(flags, args, 1, 1, "VERSION")) return *code;
  auto deployment = inv.Deployment();
  if (!deployment.ok()) return inv.Fail(deployment.status());
  v1::GetReleaseRequest req;
  req.set_deployment(*deployment);
  req.set_version(inv.args()[0]);
  v1::GetReleaseResponse resp;
  if (auto code = inv.Fetch("GetRelease", &Stub::GetRelease, req, &resp,
                            "`hoist releases` lists the recorded releases")) {
    return *code;
  }
  const v1::Release& r = resp.release();
  std::ostream& out = inv.out();
  out << "Release " << r.version() << " of " << r.deployment() << ", recorded " << FormatTime(r.created_at())
      << "\n\n";
  Table images({"SERVICE", "IMAGE", "DIGEST"});
  for (const auto& [service, image] : Sorted(r.images())) {
    auto d = r.digests().find(service);
    images.AddRow({service, image, d == r.digests().end() ? "not pulled yet" : ShortDigest(d->second)});
  }
  images.Print(out);
  if (r.required_env_size() > 0) out << "\nRequired env: " << absl::StrJoin(r.required_env(), ", ") << "\n";
  if (r.renamed_env_size() > 0) {
    out << "\nRenamed env:\n";
    for (const auto& [from, to] : Sorted(r.renamed_env())) out << "  " << from << " -> " << to << "\n";
  }
  out << "\nNotes:\n";
  if (r.notes().empty()) out << "  (none)\n";
  PrintIndented(out, r.notes(), 2);
  return kExitOk;
}

int RunReleases(const Args& args, CliIo& io) {
  Invocation inv("releases", io);
  FlagSet flags("hoist releases [flags]", "Lists a deployment's releases, newest first.");
  flags.AddExample("hoist releases");
  flags.AddExample("hoist releases -d shop --output json");
  if (auto code = inv.Parse(flags, args, 0, 0, "")) return *code;
  auto deployment = inv.Deployment();
  if (!deployment.ok()) return inv.Fail(deployment.status());
  v1::ListReleasesRequest req;
  req.set_deployment(*deployment);
  v1::ListReleasesResponse resp;
  if (auto code = inv.Fetch("ListReleases", &Stub::ListReleases, req, &resp)) return *code;
  if (resp.releases_size() == 0) {
    inv.out() << "No releases of " << *deployment << " yet; record one with hoist release create FILE\n";
    return kExitOk;
  }
  Table table({"VERSION", "RECORDED", "SERVICES", "NOTES"});
  for (const auto& r : resp.releases()) {
    std::vector<std::string> services;
    for (const auto& [service, image] : Sorted(r.images())) services.push_back(service);
    table.AddRow({r.version(), FormatTime(r.created_at()), absl::StrJoin(services, ","), FirstLine(r.notes(), 50)});
  }
  table.Print(inv.out());
  return kExitOk;
}

}  // namespace hoist::cli

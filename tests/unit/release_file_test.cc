#include "controller/rollout/release_file.h"

#include <map>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace hoist::rollout {
namespace {

using ::testing::HasSubstr;

// Messages as std::string, so failures print them as text.
std::string Msg(const absl::Status& s) { return std::string(s.message()); }

const std::string kExamples = std::string(HOIST_SOURCE_DIR) + "/deploy/examples/";

absl::Status ParseError(const std::string& text) {
  auto r = ParseReleaseFile("r.yaml", text);
  EXPECT_FALSE(r.ok()) << "expected the release file to be refused:\n" << text;
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << text;
  return r.status();
}

TEST(ReleaseFileTest, ParsesTheExampleReleaseFiles) {
  auto piprio = LoadReleaseFile(kExamples + "piprio-release-1.1.0.yaml");
  ASSERT_TRUE(piprio.ok()) << piprio.status();
  EXPECT_EQ(piprio->version(), "1.1.0");
  EXPECT_EQ(piprio->deployment(), "piprio");
  EXPECT_EQ(piprio->images().at("api"), "registry.local:5000/piprio/api:1.1.0");
  EXPECT_EQ(piprio->images_size(), 4);
  EXPECT_THAT(piprio->notes(), HasSubstr("export_jobs"));
  ASSERT_EQ(piprio->required_env_size(), 1);
  EXPECT_EQ(piprio->required_env(0), "PIPRIO_SECRET_KEY");
  EXPECT_EQ(piprio->renamed_env().at("PIPRIO_S3_URL"), "PIPRIO_OBJECT_STORE_URL");
  auto rat = LoadReleaseFile(kExamples + "rat-release-1.1.0.yaml");
  ASSERT_TRUE(rat.ok()) << rat.status();
  EXPECT_EQ(rat->images_size(), 4);
}

TEST(ReleaseFileTest, LoadingAMissingFileIsNotFound) {
  auto r = LoadReleaseFile(kExamples + "no-such-release.yaml");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Msg(r.status()), HasSubstr("cannot read"));
}

TEST(ReleaseFileTest, RefusesAMissingVersion) {
  EXPECT_THAT(Msg(ParseError("images: {api: reg/api:1.0.0}\n")),
              HasSubstr("r.yaml:1: version: missing; add `version: 1.5.0`"));
}

TEST(ReleaseFileTest, RefusesAVersionThatIsNotSemantic) {
  absl::Status st = ParseError("version: v1.0\nimages: {api: reg/api:1.0.0}\n");
  EXPECT_THAT(Msg(st), HasSubstr("r.yaml:1: version: invalid version \"v1.0\""));
}

TEST(ReleaseFileTest, RefusesAnImageTaggedLatest) {
  EXPECT_THAT(Msg(ParseError("version: 1.0.0\nimages:\n  api: reg/api:latest\n")),
              HasSubstr("r.yaml:3: images.api: \"reg/api:latest\" is not pinned"));
}

TEST(ReleaseFileTest, RefusesAnUnknownKeyNamingTheKnownOnes) {
  EXPECT_THAT(Msg(ParseError("version: 1.0.0\nimage: {}\n")),
              HasSubstr("r.yaml:2: image: unknown key; a release file has deployment, version, images, notes, "
                        "required_env, renamed_env"));
}

TEST(ReleaseFileTest, RefusesARequiredEnvThatIsNotAnEnvName) {
  EXPECT_THAT(Msg(ParseError("version: 1.0.0\nimages: {api: reg/api:1.0.0}\nrequired_env: [\"1BAD\"]\n")),
              HasSubstr("r.yaml:3: required_env: \"1BAD\" is not an environment variable name"));
}

TEST(ReleaseFileTest, RefusesARenamedEnvWhoseNewNameIsNotAnEnvName) {
  EXPECT_THAT(Msg(ParseError("version: 1.0.0\nimages: {api: reg/api:1.0.0}\nrenamed_env:\n  OLD: new-name\n")),
              HasSubstr("r.yaml:4: renamed_env.OLD: \"new-name\" is not an environment variable name"));
}

TEST(ReleaseFileTest, RefusesAnEmptyFileAndInvalidYaml) {
  EXPECT_THAT(Msg(ParseError("")), HasSubstr("r.yaml:1: expected a mapping with version and images"));
  EXPECT_THAT(Msg(ParseError("version: [1\n")), HasSubstr("see hoist release create --help"));
}

TEST(ReleaseFileTest, ReportsTheLineOfEachKeyAndImage) {
  std::map<std::string, uint32_t> lines;
  auto r = ParseReleaseFile("r.yaml",
                            "# a comment\n"
                            "version: 1.5.0\n"
                            "images:\n"
                            "  api: registry.local/shop-api:1.5.0\n"
                            "  worker: registry.local/shop-worker@sha256:0123456789abcdef\n"
                            "notes: Adds invoices.\n",
                            &lines);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(lines, (std::map<std::string, uint32_t>{
                       {"version", 2}, {"images", 3}, {"images.api", 4}, {"images.worker", 5}, {"notes", 6}}));
}

}  // namespace
}  // namespace hoist::rollout

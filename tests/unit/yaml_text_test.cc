#include "shared/yaml_text.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace hoist {
namespace {

using ::testing::HasSubstr;

TEST(YamlTextTest, OneDocumentLoads) {
  auto node = LoadYamlDocument("a.yaml", "---\na: 1\nb: [x, y]\n", "stack manifest");
  ASSERT_TRUE(node.ok()) << node.status();
  EXPECT_EQ((*node)["a"].as<int>(), 1);
  auto empty = LoadYamlDocument("e.yaml", "", "stack manifest");
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_TRUE(empty->IsNull());
}

TEST(YamlTextTest, ASecondDocumentIsRefusedAtItsLine) {
  auto node = LoadYamlDocument("a.yaml", "a: 1\nb: 2\n---\nc: 3\n", "stack manifest");
  ASSERT_FALSE(node.ok());
  EXPECT_THAT(node.status().message(), HasSubstr("a.yaml:3: a second YAML document starts here"));
  EXPECT_THAT(node.status().message(), HasSubstr("a stack manifest is one document"));
  // A leading --- opens the first document, not a second one.
  auto led = LoadYamlDocument("b.yaml", "# header\n---\na: 1\n---\nb: 2\n", "release file");
  ASSERT_FALSE(led.ok());
  EXPECT_THAT(led.status().message(), HasSubstr("b.yaml:4: a second YAML document"));
  // --- inside a block scalar is text.
  auto notes = LoadYamlDocument("c.yaml", "notes: |\n  ---\n  more\n", "release file");
  EXPECT_TRUE(notes.ok()) << notes.status();
}

TEST(YamlTextTest, BytesThatAreNotUtf8AreNamedWithLineAndColumn) {
  auto latin1 = CheckYamlText("l.yaml", "a: 1\nname: caf\xe9\n", "stack manifest");
  ASSERT_FALSE(latin1.ok());
  EXPECT_THAT(latin1.message(), HasSubstr("l.yaml:2:10: byte 0xE9 is not UTF-8"));
  EXPECT_THAT(latin1.message(), HasSubstr("save the stack manifest as UTF-8"));
  // Overlong encodings, surrogates and truncated sequences are not UTF-8 either.
  for (const std::string& bad : {std::string("\xc0\xaf"), std::string("\xed\xa0\x80"), std::string("\xe2\x82"),
                                std::string("\xf5\x80\x80\x80")}) {
    EXPECT_FALSE(CheckYamlText("x.yaml", "a: " + bad, "stack manifest").ok()) << bad.size();
  }
  EXPECT_TRUE(CheckYamlText("u.yaml", "name: caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x9a\x80\n", "stack manifest").ok());
  auto nul = CheckYamlText("n.yaml", std::string("a: 1\0", 5), "stack manifest");
  EXPECT_THAT(nul.message(), HasSubstr("n.yaml:1:5: the stack manifest holds a NUL byte"));
}

TEST(YamlTextTest, FilesOverTheLimitAreRefusedBeforeParsing) {
  std::string big = "a: \"" + std::string(kMaxYamlFileBytes, 'x') + "\"\n";
  auto r = CheckYamlText("big.yaml", big, "release file");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.message(), HasSubstr("big.yaml: the release file is 1.0 MiB; Hoist reads at most 1.0 MiB"));
  EXPECT_TRUE(CheckYamlText("ok.yaml", std::string(kMaxYamlFileBytes, ' '), "release file").ok());
}

TEST(YamlTextTest, SyntaxErrorsNameLineAndColumn) {
  auto node = LoadYamlDocument("s.yaml", "a: 1\nb: [x, y\n", "stack manifest");
  ASSERT_FALSE(node.ok());
  EXPECT_THAT(node.status().message(), HasSubstr("s.yaml:"));
  EXPECT_THAT(node.status().message(), HasSubstr("not valid YAML"));
}

}  // namespace
}  // namespace hoist

// The size rules of Hoist's own code (controller/, agent/, shared/): no
// source file over 700 lines and no function body over 100, so that every
// unit can be read whole. Functions are found by a brace scan over the code
// with comments and string literals blanked: a block whose opening brace
// follows a parameter list, outside any other function, is a function; its
// length runs from the line of its opening brace to the line of its closing
// one.

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace hoist {
namespace {

constexpr int kMaxFileLines = 700;
constexpr int kMaxFunctionLines = 100;

// The text with comments and string and character literals replaced by
// spaces, newlines kept (so that line numbers still hold).
std::string Blank(const std::string& src) {
  std::string out = src;
  const size_t n = src.size();
  size_t i = 0;
  auto blank = [&](size_t from, size_t to) {
    for (size_t k = from; k < to && k < n; ++k) {
      if (out[k] != '\n') out[k] = ' ';
    }
  };
  while (i < n) {
    if (src.compare(i, 2, "//") == 0) {
      size_t end = src.find('\n', i);
      if (end == std::string::npos) end = n;
      blank(i, end);
      i = end;
    } else if (src.compare(i, 2, "/*") == 0) {
      size_t end = src.find("*/", i + 2);
      end = end == std::string::npos ? n : end + 2;
      blank(i, end);
      i = end;
    } else if (src.compare(i, 2, "R\"") == 0 && (i == 0 || !(std::isalnum(src[i - 1]) || src[i - 1] == '_'))) {
      const size_t open = src.find('(', i);
      std::string close(1, ')');
      close.append(src, i + 2, open - i - 2);
      close.push_back('"');
      size_t end = src.find(close, open);
      end = end == std::string::npos ? n : end + close.size();
      blank(i, end);
      i = end;
    } else if (src[i] == '"' || (src[i] == '\'' && (i == 0 || !std::isxdigit(src[i - 1])))) {
      const char quote = src[i];
      size_t k = i + 1;
      while (k < n && src[k] != quote && src[k] != '\n') k += src[k] == '\\' ? 2 : 1;
      blank(i, k + 1);
      i = k + 1;
    } else {
      ++i;
    }
  }
  return out;
}

struct Function {
  std::string head;
  int line = 0;
  int lines = 0;
};

// Every function body in the text, with the line its body opens on.
std::vector<Function> Functions(const std::string& code) {
  struct Open {
    bool function;
    int line;
    std::string head;
  };
  std::vector<Open> stack;
  std::vector<Function> found;
  std::string statement;
  int line = 1;
  int in_function = 0;
  for (char c : code) {
    if (c == '\n') ++line;
    if (c == '{') {
      const std::string head(absl::StripAsciiWhitespace(statement));
      const bool scope = absl::StrContains(head, "namespace") || absl::StartsWith(head, "class ") ||
                         absl::StartsWith(head, "struct ") || absl::StartsWith(head, "enum ") ||
                         absl::StartsWith(head, "union ") || absl::StrContains(head, " class ") ||
                         absl::StrContains(head, " struct ") || absl::StartsWith(head, "extern");
      const bool function = in_function == 0 && !scope && absl::StrContains(head, ")") && !absl::EndsWith(head, "=");
      std::string shown = head.substr(0, 80);
      std::replace(shown.begin(), shown.end(), '\n', ' ');
      stack.push_back({function, line, shown});
      if (function) ++in_function;
      statement.clear();
    } else if (c == '}') {
      if (!stack.empty()) {
        Open open = stack.back();
        stack.pop_back();
        if (open.function) {
          --in_function;
          found.push_back({open.head, open.line, line - open.line + 1});
        }
      }
      statement.clear();
    } else if (c == ';') {
      statement.clear();
    } else {
      statement += c;
    }
  }
  return found;
}

std::vector<std::filesystem::path> Sources() {
  std::vector<std::filesystem::path> files;
  for (const char* dir : {"controller", "agent", "shared"}) {
    for (const auto& entry : std::filesystem::recursive_directory_iterator(std::filesystem::path(HOIST_SOURCE_DIR) / dir)) {
      const std::string ext = entry.path().extension();
      if (entry.is_regular_file() && (ext == ".cc" || ext == ".h")) files.push_back(entry.path());
    }
  }
  return files;
}

std::string Read(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

TEST(SourceSizeTest, TheScanFindsFunctionsAndSkipsCommentsStringsAndScopes) {
  const std::string code =
      "namespace a {\n"
      "struct S { int f() { return 1; } };\n"
      "// not { a function }\n"
      "int g(int x) {\n"
      "  auto l = [](int y) { return y; };\n"
      "  const char* s = \"{ not a block }\";\n"
      "  if (x) { return l(x); }\n"
      "  return 0;\n"
      "}\n"
      "}  // namespace a\n";
  std::vector<Function> found = Functions(Blank(code));
  ASSERT_EQ(found.size(), 2u);
  EXPECT_EQ(found[0].line, 2);  // S::f, inline in its class
  EXPECT_EQ(found[0].lines, 1);
  EXPECT_EQ(found[1].line, 4);  // g, with its lambda and block inside
  EXPECT_EQ(found[1].lines, 6);
}

TEST(SourceSizeTest, NoSourceFileIsOverSevenHundredLines) {
  std::vector<std::filesystem::path> files = Sources();
  ASSERT_GT(files.size(), 50u) << "the sources were not found under " << HOIST_SOURCE_DIR;
  for (const auto& path : files) {
    const std::string text = Read(path);
    const int lines = static_cast<int>(std::count(text.begin(), text.end(), '\n'));
    EXPECT_LE(lines, kMaxFileLines) << path.string() << " has " << lines << " lines: split it along a seam";
  }
}

TEST(SourceSizeTest, NoFunctionIsOverAHundredLines) {
  for (const auto& path : Sources()) {
    for (const Function& f : Functions(Blank(Read(path)))) {
      EXPECT_LE(f.lines, kMaxFunctionLines)
          << path.string() << ":" << f.line << ": " << f.head << " is " << f.lines << " lines: cut it";
    }
  }
}

}  // namespace
}  // namespace hoist

# Writes a C++ source holding every migrations/*.sql file, so that hoistd
# carries its schema inside the binary. Run by a custom command with
#   -DSOURCE_DIR=<migrations dir> -DOUTPUT=<file.cc>
file(GLOB files RELATIVE "${SOURCE_DIR}" "${SOURCE_DIR}/*.sql")
list(SORT files)
set(body "// Generated from migrations/*.sql by cmake/embed_migrations.cmake. Do not edit.\n")
string(APPEND body "#include \"controller/store/embedded_migrations.h\"\n\nnamespace hoist {\n\n")
string(APPEND body "const std::vector<EmbeddedFile>& EmbeddedMigrationFiles() {\n")
string(APPEND body "  static const std::vector<EmbeddedFile>* files = new std::vector<EmbeddedFile>{\n")
foreach(f IN LISTS files)
  file(READ "${SOURCE_DIR}/${f}" hex HEX)
  string(LENGTH "${hex}" hex_len)
  # Bytes as a string literal of \x escapes: exact, whatever the file holds.
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "\\\\x\\1" escaped "${hex}")
  string(APPEND body "      {\"${f}\", std::string(\"${escaped}\", ${hex_len} / 2)},\n")
endforeach()
string(APPEND body "  };\n  return *files;\n}\n\n}  // namespace hoist\n")
file(WRITE "${OUTPUT}.tmp" "${body}")
file(COPY_FILE "${OUTPUT}.tmp" "${OUTPUT}" ONLY_IF_DIFFERENT)

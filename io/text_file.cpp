#include "lowrank/io/text_file.hpp"

#include <fstream>
#include <sstream>

#include "lowrank/core/error.hpp"

namespace lowrank {

std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open for reading", path.string());
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) fail("{}: read error", path.string());
  return std::move(text).str();
}

}  // namespace lowrank

#pragma once
// Reading a whole text file (JSON configs, vocabularies, merge lists): the one reader of the project,
// so that every caller reports a missing or unreadable file the same way. Writing goes through
// io/atomic_file.hpp.
#include <filesystem>
#include <string>

namespace lowrank {

// The bytes of `path`. Throws lowrank::Error "<path>: cannot open for reading" or "<path>: read error".
std::string read_text(const std::filesystem::path& path);

}  // namespace lowrank

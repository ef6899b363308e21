#pragma once
// Values recorded once into a committed safetensors fixture and compared bit for bit afterwards: the
// guard a refactoring runs against ("the outputs and gradients did not change by a single bit").
//
//   Recorded rec(path);        // compares against `path`
//   rec.check("logits", t);    // tensor: same shape, dtype and bits as recorded
//   rec.check("loss", 2.31);   // double, stored as an F64 [1] tensor
//   rec.check_text("k", s);    // string, stored in the file's metadata
//   rec.finish();              // every recorded key was checked (a value dropped from the test fails)
//
// With LOWRANK_RECORD_FIXTURES=1 in the environment the same calls record instead and finish() writes
// `path` (regenerate only when a change of the numbers is intended, and say so in the commit).
// The values depend on the BLIS kernel set: the fixtures use shapes below 32, which lowrank sends to the
// AVX2 `haswell` kernels on every x86-64 host with AVX2 and FMA (core/cpu/blis_gemm.cpp); running with
// LOWRANK_BLIS_KERNELS set to another set changes the last bits.
#include <doctest/doctest.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <utility>

#include "lowrank/io/safetensors.hpp"
#include "checks.hpp"

namespace lowrank::test {

class Recorded {
 public:
  explicit Recorded(std::filesystem::path file) : file_(std::move(file)) {
    const char* env = std::getenv("LOWRANK_RECORD_FIXTURES");
    recording_ = env && std::strcmp(env, "1") == 0;
    if (!recording_) {
      REQUIRE_MESSAGE(std::filesystem::exists(file_), "missing fixture " << file_.string());
      const SafetensorsFile st = SafetensorsFile::open(file_);
      for (const TensorInfo& info : st.tensors()) tensors_.emplace(info.name, st.load(info.name));
      metadata_ = st.metadata();
      metadata_.erase("format");
    }
  }

  bool recording() const { return recording_; }

  void check(const std::string& key, const Tensor& value) {
    REQUIRE_MESSAGE(checked_.insert(key).second, "key '" << key << "' checked twice");
    if (recording_) {
      tensors_.emplace(key, value.to(Device::cpu()).contiguous().clone());
      return;
    }
    const auto it = tensors_.find(key);
    REQUIRE_MESSAGE(it != tensors_.end(), "fixture " << file_.string() << " has no tensor '" << key << "'");
    const Tensor actual = value.to(Device::cpu());
    INFO("key '" << key << "': recorded " << it->second.shape().str() << " " << name_of(it->second.dtype()) << ", now "
                 << actual.shape().str() << " " << name_of(actual.dtype()));
    CHECK(bitwise_equal(actual, it->second));
  }

  void check(const std::string& key, double value) { check(key, Tensor::from({1}, {value}, DType::f64)); }

  void check_text(const std::string& key, const std::string& value) {
    REQUIRE_MESSAGE(checked_.insert(key).second, "key '" << key << "' checked twice");
    if (recording_) {
      metadata_[key] = value;
      return;
    }
    const auto it = metadata_.find(key);
    REQUIRE_MESSAGE(it != metadata_.end(), "fixture " << file_.string() << " has no metadata '" << key << "'");
    CHECK_MESSAGE(it->second == value, "key '" << key << "': recorded " << it->second << ", now " << value);
  }

  void finish() {
    if (recording_) {
      NamedTensors tensors(tensors_.begin(), tensors_.end());
      save_safetensors(file_, tensors, metadata_);
      MESSAGE("recorded " << tensors.size() << " tensors into " << file_.string());
      return;
    }
    for (const auto& [key, value] : tensors_) CHECK_MESSAGE(checked_.contains(key), "recorded tensor '" << key << "' was not checked");
    for (const auto& [key, value] : metadata_) CHECK_MESSAGE(checked_.contains(key), "recorded metadata '" << key << "' was not checked");
  }

 private:
  std::filesystem::path file_;
  bool recording_ = false;
  std::map<std::string, Tensor> tensors_;
  std::map<std::string, std::string> metadata_;
  std::set<std::string> checked_;
};

}  // namespace lowrank::test

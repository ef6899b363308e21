// PEFT adapter directories: round trip of lora::Linear layers, the JSON PEFT reads, the scaling mapping,
// and the errors for every way a directory can be wrong.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <string>
#include <unistd.h>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include "lowrank/io/safetensors.hpp"
#include "lowrank/lora/adapter_file.hpp"
#include "lowrank/lora/linear.hpp"
#include "../support/temp_dir.hpp"
#include "../support/errors.hpp"
#include "../support/files.hpp"
#include "support.hpp"

using namespace lowrank;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

using lowrank::test::TempDir;
using lowrank::test::write_text;
using lowrank::test::bitwise_equal;

Tensor scaled_random(Shape shape, std::uint64_t seed, double scale = 1.0) {
  RandomStream rng{seed, 0};
  return Tensor::uniform(shape, -scale, scale, rng);
}

lora::Linear make_named_layer(std::int64_t in, std::int64_t out, bool bias, const lora::Config& config, std::uint64_t seed,
                        const std::string& name = {}) {
  RandomStream init{seed, 0};
  return lora::Linear(scaled_random({out, in}, 1000 + in * 7 + out), bias ? scaled_random({out}, 2000 + out) : Tensor(),
                      config, init, name);
}

// Gives A and B values a trained adapter would have (B is zero at init, which would hide a lost B).
void pretend_trained(lora::Linear& layer, std::uint64_t seed) {
  layer.lora_A()->value.copy_from(scaled_random(layer.lora_A()->value.shape(), seed));
  layer.lora_B()->value.copy_from(scaled_random(layer.lora_B()->value.shape(), seed + 1));
  for (const auto& p : layer.named_parameters())
    if (p.name == "bias") p.parameter->value.copy_from(scaled_random(p.parameter->value.shape(), seed + 2));
}

Tensor output_of(lora::Linear& layer, const Tensor& x) {
  layer.eval();
  return layer(input(x), [](auto expression) { return eval(std::move(expression)).value(); });
}


using lowrank::test::error_of;

json read_json(const fs::path& path) {
  std::ifstream in(path);
  return json::parse(in);
}


lora::Config config_with(lora::Scaling scaling, std::int64_t rank, double alpha, lora::Bias bias = lora::Bias::none) {
  lora::Config c;
  c.rank = rank;
  c.alpha = alpha;
  c.scaling = scaling;
  c.bias = bias;
  return c;
}

}  // namespace

TEST_CASE("lora adapter file: lora::Linear layers round trip (same A, B, bias and outputs)") {
  const lora::Config configs[] = {
      config_with(lora::Scaling::alpha_over_rank, 4, 8.0),
      config_with(lora::Scaling::alpha_over_sqrt_rank, 4, 3.0),
      config_with(lora::Scaling::alpha, 4, 2.0),
      config_with(lora::Scaling::alpha_over_rank, 2, 16.0, lora::Bias::lora_only),
  };
  for (const lora::Config& config : configs) {
    CAPTURE(config.scaling);
    CAPTURE(config.bias);
    TempDir dir("roundtrip");
    auto q = make_named_layer(12, 12, true, config, 1, "q");
    auto v = make_named_layer(12, 12, true, config, 2, "v");
    auto fc = make_named_layer(12, 20, false, config, 3, "fc");
    pretend_trained(q, 10);
    pretend_trained(v, 20);
    pretend_trained(fc, 30);
    lora::AdapterMetadata metadata;
    metadata.task_type = "CAUSAL_LM";
    metadata.base_model_name_or_path = "tiny";
    lora::save_adapter(dir.path, {{"model.layers.0.q", &q}, {"model.layers.0.v", &v}, {"model.layers.0.fc", &fc}}, metadata);

    // Fresh layers over the same base weights, different init streams: A differs until loaded.
    auto q2 = make_named_layer(12, 12, true, config, 101, "q");
    auto v2 = make_named_layer(12, 12, true, config, 102, "v");
    auto fc2 = make_named_layer(12, 20, false, config, 103, "fc");
    CHECK_FALSE(bitwise_equal(q2.lora_A()->value, q.lora_A()->value));
    lora::load_adapter(dir.path, {{"model.layers.0.q", &q2}, {"model.layers.0.v", &v2}, {"model.layers.0.fc", &fc2}});

    const Tensor x = scaled_random({5, 12}, 77);
    for (auto [a, b] : {std::pair{&q, &q2}, std::pair{&v, &v2}, std::pair{&fc, &fc2}}) {
      CHECK(bitwise_equal(b->lora_A()->value, a->lora_A()->value));
      CHECK(bitwise_equal(b->lora_B()->value, a->lora_B()->value));
      CHECK(bitwise_equal(b->bias().defined() ? b->bias() : Tensor::zeros({1}), a->bias().defined() ? a->bias() : Tensor::zeros({1})));
      const Tensor ya = output_of(*a, x), yb = output_of(*b, x);
      CHECK(bitwise_equal(ya, yb));
    }
  }
}

TEST_CASE("lora adapter file: keys and adapter_config.json follow PEFT") {
  TempDir dir("format");
  const auto config = config_with(lora::Scaling::alpha_over_rank, 4, 8.0);
  auto q = make_named_layer(8, 8, true, config, 1);
  auto fc = make_named_layer(8, 16, true, config, 2);
  lora::AdapterMetadata metadata;
  metadata.task_type = "CAUSAL_LM";
  metadata.fan_in_fan_out = true;
  lora::save_adapter(dir.path, {{"transformer.h.0.attn.q", &q}, {"transformer.h.0.mlp.fc", &fc}}, metadata);

  const auto file = SafetensorsFile::open(dir.path / "adapter_model.safetensors");
  std::set<std::string> keys;
  for (const auto& t : file.tensors()) keys.insert(t.name);
  CHECK(keys == std::set<std::string>{"base_model.model.transformer.h.0.attn.q.lora_A.weight",
                                      "base_model.model.transformer.h.0.attn.q.lora_B.weight",
                                      "base_model.model.transformer.h.0.mlp.fc.lora_A.weight",
                                      "base_model.model.transformer.h.0.mlp.fc.lora_B.weight"});
  CHECK(file.info("base_model.model.transformer.h.0.mlp.fc.lora_A.weight").shape == std::vector<std::int64_t>{4, 8});
  CHECK(file.info("base_model.model.transformer.h.0.mlp.fc.lora_B.weight").shape == std::vector<std::int64_t>{16, 4});
  CHECK(file.metadata().at("format") == "pt");

  const json j = read_json(dir.path / "adapter_config.json");
  CHECK(j.at("peft_type") == "LORA");
  CHECK(j.at("r") == 4);
  CHECK(j.at("lora_alpha") == 8.0);
  CHECK(j.at("lora_dropout") == 0.0);
  CHECK(j.at("target_modules") == json::array({"fc", "q"}));
  CHECK(j.at("use_rslora") == false);
  CHECK(j.at("bias") == "none");
  CHECK(j.at("fan_in_fan_out") == true);
  CHECK(j.at("task_type") == "CAUSAL_LM");
  CHECK(j.at("base_model_name_or_path").is_null());
  CHECK(j.at("init_lora_weights") == true);
  // No temporary file is left behind.
  for (const auto& entry : fs::directory_iterator(dir.path))
    CHECK(entry.path().filename().string().find(".tmp-") == std::string::npos);
}

TEST_CASE("lora adapter file: each scaling exports a lora_alpha that gives PEFT the same scale") {
  // PEFT's scale, written out here from its definition: lora_alpha / r, or lora_alpha / sqrt(r).
  auto peft_scale = [](const json& j) {
    const double r = j.at("r").get<double>(), alpha = j.at("lora_alpha").get<double>();
    return j.at("use_rslora").get<bool>() ? alpha / std::sqrt(r) : alpha / r;
  };
  struct Case {
    lora::Scaling scaling;
    double alpha, expected_scale;
    bool rslora;
  };
  for (const Case& c : {Case{lora::Scaling::alpha_over_rank, 8.0, 8.0 / 4.0, false},
                        Case{lora::Scaling::alpha_over_sqrt_rank, 8.0, 8.0 / 2.0, true},
                        Case{lora::Scaling::alpha, 1.5, 1.5, false}}) {
    CAPTURE(c.scaling);
    TempDir dir("scaling");
    auto layer = make_named_layer(8, 8, false, config_with(c.scaling, 4, c.alpha), 1);
    CHECK(layer.scaling() == doctest::Approx(c.expected_scale));
    lora::save_adapter(dir.path, {{"m", &layer}});
    const json j = read_json(dir.path / "adapter_config.json");
    CHECK(j.at("use_rslora") == c.rslora);
    CHECK(peft_scale(j) == doctest::Approx(c.expected_scale).epsilon(1e-14));
    const lora::PeftConfig read = lora::read_adapter_config(dir.path);
    CHECK(lora::scale_of(lora::config_of(read)) == doctest::Approx(c.expected_scale).epsilon(1e-14));
    if (c.scaling == lora::Scaling::alpha) CHECK(j.at("lora_alpha") == 6.0);  // alpha · r
  }
}

TEST_CASE("lora adapter file: errors name the file and the key") {
  const auto config = config_with(lora::Scaling::alpha_over_rank, 4, 8.0);
  TempDir dir("errors");
  auto q = make_named_layer(8, 8, true, config, 1);
  auto fc = make_named_layer(8, 16, false, config, 2);
  pretend_trained(q, 5);
  pretend_trained(fc, 6);
  lora::save_adapter(dir.path, {{"h.0.q", &q}, {"h.0.fc", &fc}});
  const fs::path config_file = dir.path / "adapter_config.json";
  const fs::path weights_file = dir.path / "adapter_model.safetensors";
  const std::string good_config = [&] {
    std::ifstream in(config_file);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }();
  const json good = json::parse(good_config);

  auto fresh_q = make_named_layer(8, 8, true, config, 11);
  auto fresh_fc = make_named_layer(8, 16, false, config, 12);
  auto load = [&] { lora::load_adapter(dir.path, {{"h.0.q", &fresh_q}, {"h.0.fc", &fresh_fc}}); };
  auto with_config = [&](const std::function<void(json&)>& edit) {
    json j = good;
    edit(j);
    write_text(config_file, j.dump());
  };
  auto contains = [](const std::string& message, std::initializer_list<std::string> parts) {
    for (const auto& part : parts)
      if (message.find(part) == std::string::npos) return false;
    return true;
  };

  SUBCASE("the files load as written") { CHECK(error_of(load) == "(no error)"); }
  SUBCASE("missing directory") {
    const std::string e = error_of([&] { lora::read_adapter_config(dir.path / "nope"); });
    CHECK(contains(e, {"nope", "does not exist"}));
  }
  SUBCASE("missing adapter_config.json") {
    fs::remove(config_file);
    CHECK(contains(error_of(load), {"adapter_config.json", "missing"}));
  }
  SUBCASE("missing adapter_model.safetensors") {
    fs::remove(weights_file);
    CHECK(contains(error_of(load), {"adapter_model.safetensors", "missing"}));
  }
  SUBCASE("a PyTorch pickle instead of safetensors") {
    fs::remove(weights_file);
    write_text(dir.path / "adapter_model.bin", "pickle");
    CHECK(contains(error_of(load), {"adapter_model.bin", "convert"}));
  }
  SUBCASE("invalid JSON") {
    write_text(config_file, "{\"peft_type\": \"LORA\", \"r\": 4,");
    CHECK(contains(error_of(load), {"adapter_config.json", "not valid JSON"}));
  }
  SUBCASE("wrong peft_type") {
    with_config([](json& j) { j["peft_type"] = "IA3"; });
    CHECK(contains(error_of(load), {"adapter_config.json", "peft_type", "IA3", "LORA"}));
  }
  SUBCASE("missing r") {
    with_config([](json& j) { j.erase("r"); });
    CHECK(contains(error_of(load), {"adapter_config.json", "missing key \"r\""}));
  }
  SUBCASE("wrong type of a field") {
    with_config([](json& j) { j["lora_alpha"] = "eight"; });
    CHECK(contains(error_of(load), {"adapter_config.json", "lora_alpha", "string", "number"}));
  }
  SUBCASE("unsupported PEFT features") {
    with_config([](json& j) { j["use_dora"] = true; });
    CHECK(contains(error_of(load), {"adapter_config.json", "use_dora"}));
    with_config([](json& j) { j["rank_pattern"] = {{"h.0.q", 8}}; });
    CHECK(contains(error_of(load), {"adapter_config.json", "rank_pattern"}));
    with_config([](json& j) { j["init_lora_weights"] = "pissa"; });
    CHECK(contains(error_of(load), {"adapter_config.json", "init_lora_weights", "pissa"}));
  }
  SUBCASE("r in the config differs from the layers' rank") {
    with_config([](json& j) { j["r"] = 2; j["lora_alpha"] = 4.0; });
    CHECK(contains(error_of(load), {"adapter_config.json", "r = 2", "h.0.q", "rank 4"}));
  }
  SUBCASE("r in the config differs from the tensors' rank") {
    // Layers of rank 2 with the same scale, and a config that says 2, over tensors of rank 4.
    auto q2 = make_named_layer(8, 8, true, config_with(lora::Scaling::alpha_over_rank, 2, 4.0), 1);
    auto fc2 = make_named_layer(8, 16, false, config_with(lora::Scaling::alpha_over_rank, 2, 4.0), 2);
    with_config([](json& j) { j["r"] = 2; j["lora_alpha"] = 4.0; });
    const std::string e = error_of([&] { lora::load_adapter(dir.path, {{"h.0.q", &q2}, {"h.0.fc", &fc2}}); });
    CHECK(contains(e, {"adapter_model.safetensors", "base_model.model.h.0.q.lora_A.weight", "[4, 8]", "r = 2"}));
  }
  SUBCASE("the scale differs") {
    with_config([](json& j) { j["lora_alpha"] = 16.0; });
    CHECK(contains(error_of(load), {"adapter_config.json", "scale", "h.0.q", "4", "2"}));
  }
  SUBCASE("a module is missing from the file") {
    with_config([](json& j) { j["target_modules"] = json::array({"q", "fc", "o"}); });  // selected, but not in the file
    auto o = make_named_layer(8, 8, false, config, 3);
    const std::string e = error_of([&] { lora::load_adapter(dir.path, {{"h.0.q", &fresh_q}, {"h.0.fc", &fresh_fc}, {"h.0.o", &o}}); });
    CHECK(contains(e, {"adapter_model.safetensors", "missing tensor", "base_model.model.h.0.o.lora_A.weight"}));
  }
  SUBCASE("the file holds a module that is not expected") {
    const std::string e = error_of([&] { lora::load_adapter(dir.path, {{"h.0.q", &fresh_q}}); });
    CHECK(contains(e, {"adapter_model.safetensors", "unexpected tensor", "base_model.model.h.0.fc.lora_"}));
  }
  SUBCASE("shape does not match the base layer") {
    auto wide = make_named_layer(10, 16, false, config, 4);
    const std::string e = error_of([&] { lora::load_adapter(dir.path, {{"h.0.q", &fresh_q}, {"h.0.fc", &wide}}); });
    CHECK(contains(e, {"adapter_model.safetensors", "base_model.model.h.0.fc.lora_A.weight", "[4, 8]", "[4, 10]"}));
  }
  SUBCASE("trained biases in the file but not in the layer") {
    auto biased_q = make_named_layer(8, 8, true, config_with(lora::Scaling::alpha_over_rank, 4, 8.0, lora::Bias::lora_only), 1);
    auto biased_fc = make_named_layer(8, 16, false, config_with(lora::Scaling::alpha_over_rank, 4, 8.0, lora::Bias::lora_only), 2);
    TempDir other("bias");
    lora::save_adapter(other.path, {{"h.0.q", &biased_q}, {"h.0.fc", &biased_fc}});
    const std::string e = error_of([&] { lora::load_adapter(other.path, {{"h.0.q", &fresh_q}, {"h.0.fc", &fresh_fc}}); });
    CHECK(contains(e, {"adapter_config.json", "lora_only", "h.0.q", "bias"}));
  }
  SUBCASE("a module that target_modules does not select") {
    with_config([](json& j) { j["target_modules"] = json::array({"q", "k"}); });
    const std::string e = error_of(load);
    CHECK(contains(e, {"adapter_config.json", "module 'h.0.fc'", "not selected by target_modules", "[q, k]"}));
    // PEFT matches whole path components: "c" is not a suffix match for "h.0.fc".
    with_config([](json& j) { j["target_modules"] = "c"; });
    CHECK(contains(error_of(load), {"adapter_config.json", "module 'h.0.q'", "[c]"}));
    // A dotted target selects by path suffix, as in PEFT.
    with_config([](json& j) { j["target_modules"] = json::array({"0.q", "h.0.fc"}); });
    CHECK(error_of(load) == "(no error)");
  }
  SUBCASE("a failed load changes nothing") {
    const Tensor a_before = fresh_q.lora_A()->value.clone();
    auto wide = make_named_layer(10, 16, false, config, 4);
    CHECK(error_of([&] { lora::load_adapter(dir.path, {{"h.0.q", &fresh_q}, {"h.0.fc", &wide}}); }) != "(no error)");
    CHECK(bitwise_equal(fresh_q.lora_A()->value, a_before));
  }
}

TEST_CASE("lora adapter file: writer refuses inconsistent modules") {
  TempDir dir("writer");
  auto rank = [](std::int64_t r) {
    lora::PeftConfig c;
    c.r = r;
    return c;
  };
  CHECK_THROWS_WITH_AS(lora::write_adapter_directory(dir.path, rank(4),
                                                     {{"m", scaled_random({3, 8}, 1), scaled_random({8, 3}, 2), {}}}),
                       doctest::Contains("do not have rank r = 4"), Error);
  CHECK_THROWS_WITH_AS(lora::write_adapter_directory(dir.path, rank(2),
                                                     {{"m", scaled_random({2, 8}, 1), scaled_random({8, 2}, 2), {}},
                                                      {"m", scaled_random({2, 8}, 1), scaled_random({8, 2}, 2), {}}}),
                       doctest::Contains("'m' appears twice"), Error);
  lora::PeftConfig only_q = rank(2);
  only_q.target_modules = {"q"};
  CHECK_THROWS_WITH_AS(lora::write_adapter_directory(dir.path, only_q,
                                                     {{"h.0.q", scaled_random({2, 8}, 1), scaled_random({8, 2}, 2), {}},
                                                      {"h.0.fc", scaled_random({2, 8}, 3), scaled_random({8, 2}, 4), {}}}),
                       doctest::Contains("module 'h.0.fc' is not selected by target_modules [q]"), Error);
  auto q = make_named_layer(8, 8, false, config_with(lora::Scaling::alpha_over_rank, 4, 8.0), 1);
  auto v = make_named_layer(8, 8, false, config_with(lora::Scaling::alpha_over_rank, 2, 8.0), 1);
  CHECK_THROWS_WITH_AS(lora::save_adapter(dir.path, {{"q", &q}, {"v", &v}}), doctest::Contains("one setting for all modules"), Error);
}

TEST_CASE("lora adapter file: trained biases use PEFT's base_layer.bias key, and the legacy key loads too") {
  const auto config = config_with(lora::Scaling::alpha_over_rank, 4, 8.0, lora::Bias::lora_only);
  TempDir dir("bias_keys");
  auto q = make_named_layer(8, 8, true, config, 1);
  auto fc = make_named_layer(8, 16, false, config, 2);  // no bias: nothing to train or write
  pretend_trained(q, 7);
  lora::save_adapter(dir.path, {{"h.0.q", &q}, {"h.0.fc", &fc}});
  const fs::path weights_file = dir.path / "adapter_model.safetensors";
  const auto file = SafetensorsFile::open(weights_file);
  std::set<std::string> keys;
  for (const auto& t : file.tensors()) keys.insert(t.name);
  CHECK(keys == std::set<std::string>{"base_model.model.h.0.q.lora_A.weight", "base_model.model.h.0.q.lora_B.weight",
                                      "base_model.model.h.0.q.base_layer.bias", "base_model.model.h.0.fc.lora_A.weight",
                                      "base_model.model.h.0.fc.lora_B.weight"});
  NamedTensors tensors;
  for (const auto& t : file.tensors()) tensors.emplace_back(t.name, file.load(t.name, DType::f32));
  const Tensor trained_bias = file.load("base_model.model.h.0.q.base_layer.bias", DType::f32);
  CHECK(bitwise_equal(trained_bias, q.bias()));

  auto rewrite = [&](const std::function<void(NamedTensors&)>& edit) {
    NamedTensors edited = tensors;
    edit(edited);
    save_safetensors(weights_file, edited, {{"format", "pt"}});
  };
  auto fresh_q = make_named_layer(8, 8, true, config, 11);
  auto fresh_fc = make_named_layer(8, 16, false, config, 12);
  auto load = [&] { lora::load_adapter(dir.path, {{"h.0.q", &fresh_q}, {"h.0.fc", &fresh_fc}}); };
  auto rename_bias = [](NamedTensors& t) {
    for (auto& [name, value] : t)
      if (name == "base_model.model.h.0.q.base_layer.bias") name = "base_model.model.h.0.q.bias";
  };

  SUBCASE("the current key") {
    CHECK(error_of(load) == "(no error)");
    CHECK(bitwise_equal(fresh_q.bias(), trained_bias));
  }
  SUBCASE("the legacy key (PEFT before the base_layer wrapper)") {
    rewrite(rename_bias);
    CHECK(error_of(load) == "(no error)");
    CHECK(bitwise_equal(fresh_q.bias(), trained_bias));
  }
  SUBCASE("both keys") {
    rewrite([&](NamedTensors& t) {
      t.emplace_back("base_model.model.h.0.q.bias", trained_bias);
    });
    const std::string e = error_of(load);
    CHECK(e.find("adapter_model.safetensors") != std::string::npos);
    CHECK(e.find("two trained biases") != std::string::npos);
    CHECK(e.find("h.0.q.base_layer.bias") != std::string::npos);
  }
  SUBCASE("no bias although the config says lora_only") {
    rewrite([](NamedTensors& t) { std::erase_if(t, [](const auto& named) { return named.first.ends_with(".bias"); }); });
    const std::string e = error_of(load);
    CHECK(e.find("missing tensor 'base_model.model.h.0.q.base_layer.bias'") != std::string::npos);
    CHECK(e.find("lora_only") != std::string::npos);
  }
  SUBCASE("a bias key of a module without a bias") {
    rewrite([&](NamedTensors& t) { t.emplace_back("base_model.model.h.0.fc.base_layer.bias", scaled_random({16}, 3)); });
    const std::string e = error_of(load);
    CHECK(e.find("unexpected tensor 'base_model.model.h.0.fc.base_layer.bias'") != std::string::npos);
  }
}

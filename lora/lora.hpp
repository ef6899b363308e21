#pragma once
// LoRA: lora::Adapter (the low-rank update every holder shares), lora::Linear (adapter, weight-merge and
// merged paths), DoRA's weight norm, their configuration and policies, and parameter accounting.
#include "lowrank/lora/accounting.hpp"
#include "lowrank/lora/adapter.hpp"
#include "lowrank/lora/config.hpp"
#include "lowrank/lora/dora.hpp"
#include "lowrank/lora/linear.hpp"

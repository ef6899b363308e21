#pragma once
// LoRA: lora::Linear (adapter, weight-merge and merged paths), its configuration and policies, and
// parameter accounting.
#include "lowrank/lora/accounting.hpp"
#include "lowrank/lora/config.hpp"
#include "lowrank/lora/linear.hpp"

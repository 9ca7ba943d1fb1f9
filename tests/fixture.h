// fixture.h: loading reference tensors (written by tools/reference/ from diffusers / transformers) in tests, and
// comparing results against them with the project's parity rule: max|diff| <= tol * max|reference| per tensor.
#pragma once
#include "../src/core/tensor.h"
#include "../src/io/safetensors.h"

// A new fp32 (or i32 for integer data) CPU tensor holding fixture tensor `name` (internal failure if absent).
Tensor fixture_get(const SafeTensors *st, const char *name);
// Compares got with the reference; prints one line; returns 1 if max|got - ref| <= tol * max|ref| (NaN fails).
int fixture_compare(const char *what, const Tensor *got, const Tensor *ref, double tol);
// Exact equality of two i32 tensors; prints one line; returns 1 if equal.
int fixture_compare_i32(const char *what, const Tensor *got, const Tensor *ref);

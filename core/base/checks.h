// Helpers for the shape checks that guard every op at the boundary: they throw
// std::invalid_argument (ValueError in Python) naming the argument, what was received and
// what was expected.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace pylenet {

using Shape = std::vector<int64_t>;

// "(2, 3, 4)" for messages.
std::string shape_str(const Shape& s);
// A number for messages, as short as it prints ("0.1", "1e-05", "nan").
std::string num_str(double v);
// Throws "<op>: <arg> must be <ndim>-D <layout>, got shape (...)" unless s has ndim dims.
void check_ndim(const char* op, const char* arg, const Shape& s, size_t ndim, const char* layout);
// Throws unless value >= lo: "<op>: <arg> must be >= lo, got value".
void check_at_least(const char* op, const char* arg, int64_t value, int64_t lo);
// Throws unless a == b: "<op>: <what_a> (a) does not match <what_b> (b)".
void check_equal(const char* op, const char* what_a, int64_t a, const char* what_b, int64_t b);
// Throws unless two shapes are identical.
void check_same_shape(const char* op, const char* arg_a, const Shape& a, const char* arg_b,
                      const Shape& b);
// Throws when one output of `elements` floats would exceed 8 GiB (also guards overflow).
void check_output_size(const char* op, double elements);
// Validates a shape the caller passed as a value (a backward's x_shape): `ndim` entries
// (layout names them), each >= 0, one sample's size within check_output_size.
void check_shape_arg(const char* op, const char* arg, const Shape& s, size_t ndim, const char* layout);
// Throws "<op>: <arg>[i] = v is outside [0, hi)<context>" for the first of n values outside.
void check_indices(const char* op, const char* arg, const int64_t* v, int64_t n, int64_t hi,
                   const std::string& context = "");
// Product of the dims; the caller has checked each is >= 0.
int64_t numel(const Shape& s);

}  // namespace pylenet

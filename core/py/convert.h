// The conversion helpers every binding file shares: Python objects in, checked C-contiguous
// arrays out (numpy dtype and contiguity converted, copying only when needed).
//
// Conversion policy: every float input is converted to a C-contiguous float32 array (a copy
// when the input is anything else); the copy is never written back and the caller's arrays
// are never modified. Labels and argmax must have an integer dtype.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <new>
#include <string>
#include <vector>

#include "base/checks.h"
#include "net/registry.h"

namespace pylenet {
namespace py_bind {

namespace py = pybind11;

using FArr = py::array_t<float, py::array::c_style | py::array::forcecast>;
using I32Arr = py::array_t<int32_t, py::array::c_style | py::array::forcecast>;
using I64Arr = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;

inline std::string type_name(const py::handle& obj) {
    return py::str(py::type::of(obj).attr("__name__")).cast<std::string>();
}

// Any array-like of numbers -> C-contiguous float32 (TypeError naming the argument otherwise).
inline FArr as_float(const char* op, const char* arg, const py::handle& obj) {
    if (FArr::check_(obj)) return py::reinterpret_borrow<FArr>(obj);  // already as needed
    if (obj.is_none())
        throw py::type_error(std::string(op) + ": " + arg + " must be an array, got None");
    py::array arr = py::array::ensure(obj);
    if (!arr) {
        PyErr_Clear();
        throw py::type_error(std::string(op) + ": " + arg +
                             " must be an array-like of numbers, got " + type_name(obj));
    }
    const char kind = arr.dtype().kind();
    if (kind != 'f' && kind != 'i' && kind != 'u' && kind != 'b')
        throw py::type_error(std::string(op) + ": " + arg +
                             " must have a real numeric dtype, got " +
                             py::str(arr.dtype()).cast<std::string>());
    // Before any copy: a broadcast view can pose as a huge array while holding a few bytes.
    check_output_size((std::string(op) + " (" + arg + ")").c_str(), double(arr.size()));
    FArr out = FArr::ensure(arr);
    // ensure() returns null (and clears numpy's error) when the converted copy cannot be
    // allocated: pybind11 turns bad_alloc into MemoryError.
    if (!out) throw std::bad_alloc();
    return out;
}

// An integer array-like (any signed/unsigned width) -> C-contiguous array of T.
template <class Arr>
Arr as_int(const char* op, const char* arg, const py::handle& obj) {
    py::array arr = py::array::ensure(obj);
    if (!arr) {
        PyErr_Clear();
        throw py::type_error(std::string(op) + ": " + arg + " must be an integer array, got " +
                             type_name(obj));
    }
    const char kind = arr.dtype().kind();
    if (kind != 'i' && kind != 'u')
        throw py::type_error(std::string(op) + ": " + arg +
                             " must have an integer dtype, got " +
                             py::str(arr.dtype()).cast<std::string>());
    check_output_size((std::string(op) + " (" + arg + ")").c_str(), double(arr.size()));
    Arr out = Arr::ensure(arr);
    // ensure() returns null (and clears numpy's error) when the converted copy cannot be
    // allocated: pybind11 turns bad_alloc into MemoryError.
    if (!out) throw std::bad_alloc();
    // uint64 values above INT64_MAX wrapped negative in the int64 copy: refused, as written.
    if (kind == 'u' && arr.itemsize() == 8 && sizeof(*out.data()) == 8)
        for (py::ssize_t i = 0; i < out.size(); i++)
            if (out.data()[i] < 0)
                throw py::value_error(std::string(op) + ": " + arg + "[" + std::to_string(i) + "] = " +
                                      std::to_string(uint64_t(out.data()[i])) + " does not fit int64");
    return out;
}

inline Shape shape_of(const py::array& a) { return Shape(a.shape(), a.shape() + a.ndim()); }

inline FArr new_float(const Shape& s) { return FArr(std::vector<py::ssize_t>(s.begin(), s.end())); }

// A shape from a sequence of ints (TypeError otherwise).
inline Shape as_shape4(const char* op, const py::handle& obj) {
    Shape s;
    try {
        for (auto item : py::iter(obj)) s.push_back(item.cast<int64_t>());
    } catch (const py::error_already_set&) {
        throw py::type_error(std::string(op) + ": x_shape must be a sequence of 4 ints, got " +
                             type_name(obj));
    } catch (const py::cast_error&) {
        throw py::type_error(std::string(op) + ": x_shape must be a sequence of 4 ints, got " +
                             py::repr(obj).cast<std::string>());
    }
    return s;  // its values are checked by the op's check_* function
}


using U8Arr = py::array_t<uint8_t, py::array::c_style>;

// A uint8 array (TypeError otherwise), as a C-contiguous array.
inline U8Arr as_u8(const char* op, const py::array& images) {
    U8Arr img = U8Arr::check_(images) ? py::reinterpret_borrow<U8Arr>(images) : U8Arr::ensure(images);
    if (!img || images.dtype().kind() != 'u' || images.itemsize() != 1)
        throw py::type_error(std::string(op) + ": images must be a uint8 array");
    return img;
}

// The data pointers of converted arrays, in order.
inline std::vector<const float*> data_of(const std::vector<FArr>& arrays) {
    std::vector<const float*> out;
    for (const FArr& a : arrays) out.push_back(a.data());
    return out;
}

// A Python list of the arrays.
inline py::list to_list(const std::vector<FArr>& arrays) {
    py::list out;
    for (const FArr& a : arrays) out.append(a);
    return out;
}

// A writeable C-contiguous float32 array of `n` elements, or TypeError: for the bindings that
// update the caller's arrays in place (optimiser steps, the fused step's gradients).
inline float* inplace(const char* op, const char* arg, const py::handle& obj, int64_t n) {
    py::array a = py::array::ensure(obj);
    if (!a || !py::isinstance<py::array_t<float>>(a) || !(a.flags() & py::array::c_style) ||
        !a.writeable() || a.size() != n)
        throw py::type_error(std::string(op) + ": " + arg +
                             " must be a writeable C-contiguous float32 array of " +
                             std::to_string(n) + " elements");
    return static_cast<float*>(a.mutable_data());
}

// Layer descriptions from Python's list of layer tuples, and a (C, H, W) input shape
// (bind_net.cpp; the GPU network is built from the same).
std::vector<LayerDesc> net_descs(const py::list& layers);
Shape net_input_shape(const py::tuple& input_shape);
// A CUDA version number (13000) as "13.0", or None for 0 (bind_gpu.cpp).
py::object cuda_version(int v);

// The registration functions of the binding files (module.cpp calls each once).
void bind_ops(py::module_& m);
void bind_train(py::module_& m);
void bind_net(py::module_& m);
void bind_gpu(py::module_& m);
void bind_norm(py::module_& m);

}  // namespace py_bind
}  // namespace pylenet

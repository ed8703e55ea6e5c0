// The extension module pylenet._core: the only entry point pybind11 sees. It registers the
// binding files (bind_ops, bind_norm, bind_train, bind_net, bind_gpu) and the process-wide settings:
// threads, SIMD level and build information.
#include <string>

#include "base/build_info.h"
#include "base/parallel.h"
#include "cuda/gpu.h"
#include "gemm/simd.h"
#include "py/convert.h"

namespace {

using namespace pylenet;
using namespace pylenet::py_bind;

py::dict py_build_info() {
    const BuildInfo info = build_info();
    py::dict d;
    d["version"] = info.version;
    d["compiler"] = info.compiler;
    d["openmp"] = info.openmp;
    d["max_threads"] = info.max_threads;
    d["num_threads"] = get_num_threads();
    d["simd_compiled"] = py::cast(info.simd_compiled);
    d["simd_supported"] = py::cast(info.simd_supported);
    d["simd_used"] = info.simd_used;
    const gpu::DeviceInfo gi = gpu::device_info();
    d["cuda"] = gi.compiled;
    d["cuda_version"] = cuda_version(gi.runtime_version);
    d["cuda_archs"] = py::cast(gi.archs);
    if (gi.usable) {
        py::dict dev;
        dev["name"] = gi.name;
        dev["capability"] = std::to_string(gi.cc_major) + "." + std::to_string(gi.cc_minor);
        dev["total_memory"] = gi.total_memory;
        d["cuda_device"] = dev;
    } else {
        d["cuda_device"] = py::none();
    }
    return d;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "pylenet's C++ compute core (float32, NCHW). Use it through pylenet.ops.";
    // A PYLENET_SIMD this CPU cannot run (or a typo) fails the import with its reason.
    simd_level();
    // pybind11 writes each function's signature; the docs below are one line each.
    bind_ops(m);
    bind_train(m);
    bind_net(m);
    bind_gpu(m);
    bind_norm(m);
    m.def("set_num_threads",
          [](int n) {
              if (n < 1)
                  throw py::value_error("set_num_threads: n must be >= 1, got " + std::to_string(n));
              set_num_threads(n);
          },
          py::arg("n"), "Threads the core uses from now on (n >= 1).");
    m.def("get_num_threads", &get_num_threads,
          "Threads the core uses (1 without OpenMP).");

    m.def("simd_level", &simd_level,
          "The SIMD level the kernels run: avx512, avx2, sse2, neon or scalar.");
    m.def("set_simd_level", &simd_set_level, py::arg("level"),
          "Runs the kernels at `level` from now on (process-wide; 'auto' = "
          "the best this CPU runs). ValueError for a level that is unknown, not compiled, or not "
          "runnable here.");
    m.def("build_info", &py_build_info,
          "Version, compiler, OpenMP, threads, SIMD levels and CUDA.");
}


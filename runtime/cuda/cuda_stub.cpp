// The CUDA backend's entry points in a build without the CUDA toolkit: the tools link this
// library either way, and ask cuda_available() before choosing the device.
#include "runtime/backend.h"
#include "runtime/error.h"

namespace equivae {

template <class T>
std::unique_ptr<Backend<T>> make_cuda_backend(const CudaBackendOptions&) {
  throw Error("cuda backend",
              "this build has no CUDA backend (nvcc was not found when it was configured)");
}
template std::unique_ptr<Backend<float>> make_cuda_backend<float>(const CudaBackendOptions&);
template std::unique_ptr<Backend<double>> make_cuda_backend<double>(const CudaBackendOptions&);

bool cuda_available() {
  return false;
}

}  // namespace equivae

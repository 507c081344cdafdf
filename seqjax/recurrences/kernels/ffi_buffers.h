// Typed views of XLA FFI buffers, shared by the CPU kernels' handlers.
#ifndef SEQJAX_FFI_BUFFERS_H_
#define SEQJAX_FFI_BUFFERS_H_

#include "xla/ffi/api/ffi.h"

namespace seqjax {

// An argument's data as R (its dtype checked by the caller).
template <typename R>
const R* In(const xla::ffi::AnyBuffer& x) {
  return static_cast<const R*>(x.untyped_data());
}

// A result's data as R.
template <typename R>
R* Out(xla::ffi::Result<xla::ffi::AnyBuffer>& x) {
  return static_cast<R*>(x->untyped_data());
}

}  // namespace seqjax

#endif  // SEQJAX_FFI_BUFFERS_H_

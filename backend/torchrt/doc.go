// Package torchrt is diad's handle on the libtorch runtime underneath gotch:
// everything about libtorch that is process-wide, or that gotch's Go API
// lacks, is here, so that no other package writes cgo. By file:
//
//   - torchrt.go: the libtorch version compiled in, devices and their
//     parsing, intra-op threads, the global seed, grad mode (NoGrad) and
//     pinning the calling goroutine to its OS thread (Pin), which libtorch's
//     thread-local state (grad mode, streams) needs.
//   - boundary.go: the error boundary. The patched gotch's Must* calls panic
//     with *gotch.FatalError where upstream calls log.Fatal; Do runs tensor
//     work and recovers that panic into a returned *Error (Check and Recover
//     for callers that already hold an error).
//   - compute.go: the compute lane (LockCompute): one caller at a time
//     drives libtorch's thread team, because two teams on the same cores spin
//     against each other.
//   - blas.go: OpenBLAS's own thread count, which libtorch does not set.
//   - kernels.go and kernels.cpp: oneDNN's process-wide switch
//     (torch.backends.mkldnn.enabled), and what the loaded oneDNN, OpenBLAS
//     and libtorch report of themselves, for the kernel self-check and
//     diad doctor.
//   - inplace.go: in-place updates (optimizer and EMA steps, initialisation)
//     through libtorch directly, without the Go wrappers' per-call leak.
//   - batch.go and values.go: moving data between Go slices and tensors.
//   - memory.go and trim.go: resident memory (current, peak, reset) and
//     returning freed memory to the OS, for the memory tests and benchmarks.
package torchrt

//! Keeps libtorch's CUDA half linked. The worker calls no symbol of libtorch_cuda.so directly
//! (CUDA kernels register themselves when the library loads), so the default `--as-needed`
//! linking drops it and `tch::Cuda::is_available()` is always false. Linking `libtorch` (which
//! depends on libtorch_cuda in CUDA builds of PyTorch) without `--as-needed` keeps it loaded.

fn main() {
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    println!("cargo:rustc-link-arg=-ltorch");
    println!("cargo:rerun-if-changed=build.rs");
}

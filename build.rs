//! With the `system-librdkafka` feature (what `make` builds), the binaries and tests find the shared
//! librdkafka where `scripts/librdkafka.sh` put it (`LOBSENTRY_LIBRDKAFKA_DIR`, by default
//! `target/librdkafka`) through their run path, without `LD_LIBRARY_PATH`.
fn main() {
    println!("cargo:rerun-if-env-changed=LOBSENTRY_LIBRDKAFKA_DIR");
    if std::env::var_os("CARGO_FEATURE_SYSTEM_LIBRDKAFKA").is_some() {
        let dir = std::env::var("LOBSENTRY_LIBRDKAFKA_DIR")
            .unwrap_or_else(|_| format!("{}/target/librdkafka", std::env::var("CARGO_MANIFEST_DIR").unwrap()));
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
}

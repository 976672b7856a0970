//! Nothing: this package exists so that Cargo builds kryoptic's module (a `cdylib`) with the
//! features chosen in `Cargo.toml`.

//! compose: a declarative, Nix-style OCI image composer.
//!
//! Data flow, left to right: [`spec`] (KDL → typed spec) → [`source`] (fingerprint local files) →
//! [`plan`] (DAG of derivations with [`hash::DrvHash`]es) → [`build`] (store ▸ execute, in
//! parallel, writing [`layer`]s into the [`store`]) → [`image`] (config, manifest, index; exports).
//! [`ops`] strings them together for each command; `main.rs` is the only place that prints.

pub mod apt;
pub mod base;
pub mod build;
pub mod clients;
pub mod hash;
pub mod http;
pub mod image;
pub mod layer;
pub mod lock;
pub mod oci;
pub mod ops;
pub mod plan;
pub mod reference;
pub mod registry;
pub mod remote;
pub mod resolution;
pub mod sbom;
pub mod source;
pub mod spec;
pub mod store;
pub mod util;

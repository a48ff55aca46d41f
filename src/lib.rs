//! compose: a declarative, Nix-style OCI image composer.
//!
//! # Architecture
//!
//! The design (data flow, derivations, execution, ecosystems, reproducibility, the store, the
//! threat model) is `docs/architecture.md`; this is the module map.
//!
//! Data flows one way: `spec.kdl` → [`spec`] → [`base`] + [`source`] + [`resolution`]/[`lock`]
//! → [`plan`] (a DAG of derivations) → [`exec`] (store ▸ remote ▸ run, in parallel) →
//! [`image`] (finished images and their exports) → [`ops`] (one operation per command) →
//! the binary, `main.rs` and `cli/` (flags in, output out: the only place that prints).
//!
//! A module may use only modules of a lower level (`tests/it/architecture.rs` holds this):
//!
//! | level | module | owns |
//! |---|---|---|
//! | 0 | [`util`] | an I/O error with its path, atomic file writes, error chains as one line, the one `$` expander (`util::expand`: Docker's ENV, import's ARGs, the spec's `${NAME}`) |
//! | 0 | [`hash`] | typed digests (`Sha256`, `DrvHash`, `ContentHash`) and the derivation-hash encoding; hashing readers and writers (`HashingWriter`, `CheckedReader`); an open sha256 state (`ShaState`) and chains of it |
//! | 1 | [`layer`] | reproducible layers: ustar+PAX tar, cut into chunks each compressed with gzip (libdeflate) or zstd, kept chunks reused; image-path rules (parents, merged `/usr`); reading layers back and checking their diff_id |
//! | 1 | [`entry`] | the entries of a layer as planned (path, kind, where a file's bytes come from, mode, owners): what the planner, the ecosystems' effects and the executor speak |
//! | 1 | [`reference`](mod@reference) | the OCI reference grammar (hosts, repositories, tags) |
//! | 2 | [`tarcheck`] | the one reader of layer and tree tars from the store or a cache: the rules each kind of tree keeps, bounds |
//! | 2 | [`spec`] | KDL → typed, checked `SpecFile`, with diagnostics pointing at the bad node |
//! | 3 | [`import`] | a Dockerfile to a spec, with a note per instruction (`compose import`) |
//! | 3 | [`lock`] | the lockfile: model, versioned read/write, consistency with the spec |
//! | 3 | [`oci`] | OCI documents: exact bytes of what we write, typed reading of what others wrote |
//! | 4 | [`record`] | records: the type, each kind's shape, whether a record fits its derivation (`fits`), fingerprints and signatures (`record::sign`): the one place that says whether a record is trusted |
//! | 4 | [`http`] | the HTTP client (mirrors, the HTTP cache): retries, streaming, `file://` |
//! | 4 | [`registry`] | OCI distribution: pull, push, auth, reference parsing |
//! | 4 | [`sbom`] | SPDX documents and DEP-5 licence names |
//! | 5 | [`store`] | the content-addressed store (`cache/v1/…`, drawn in its module doc) |
//! | 6 | [`trust`] | the deep check of a stored record's blobs (`compose cache verify`): `diff_id`s, the rules of trees compose wrote, manifests and indexes |
//! | 6 | [`source`] | fingerprints of local files (stat cache) |
//! | 6 | [`debian`] (an ecosystem) | the Debian ecosystem: repositories (sources, InRelease, indexes), the resolver, the installer (`.deb`s into layers) and the maintainer scripts' effects (alternatives, certificates) |
//! | 6 | [`clients`] | the network clients of one command, made once from flags and environment |
//! | 7 | [`base`] | base images (layouts, archives, registries), their layers and files |
//! | 7 | [`resolution`] | a spec's packages → pinned lockfile entries |
//! | 7 | [`remote`] | shared caches (HTTP, OCI registry): moving records and blobs; whether to believe them is [`record`]'s |
//! | 8 | [`plan`] | the derivation model, the DAG, `DrvHash`es, layering and file-op rules, the root file system identity steps are keyed by; no I/O |
//! | 9 | [`exec`] | executing a plan: the scheduler (`exec::schedule`: needs, lookups, parallel runs), each kind's operation (`exec::run`), layers and images; jobs (steps and maintainer scripts: `exec::job`) through the `exec::executor::Executor` seam, runc behind it (`exec::sandbox`: hardening, limits, interruption; `exec::seccomp`); steps' declared caches (`exec::caches`); what a failed command's log says (`exec::diagnose`); steps of another architecture (`exec::emulation`); trees (`exec::trees`: unpacked images, sealed, the one walker); progress through `Reporter` |
//! | 10 | [`image`] | finished images; OCI layout, archives, registry push |
//! | 11 | [`ops`] | each command's operation: build, lock, plan, explain, cache |
//! | 12 | `cli` | the binary's, not the library's (`src/main.rs` declares it): the flags, each command's call into [`ops`] and its output, one file per command; the only place that prints |
//!
//! # On-disk formats
//!
//! All versioned; an unknown version is refused with a clear error:
//! - the store, `cache/v1/` (blobs, records, stat caches, locks, remote markers, names, unpacked
//!   images, failed steps' logs, verified-blob markers, what was exported where, kept compressed
//!   chunks, steps' declared caches): [`store`];
//! - an output directory: the exports and `.compose-lock` (serialises exports into it): [`image`];
//! - the lockfile, `SPEC.lock` (`version` field; packages, base digests, fixed-output steps' pins): [`lock`];
//! - records (`version` field, outputs by name, inputs in words): [`record::Record`];
//! - layers: `layer::LAYER_FORMAT_ID` and `layer::ZSTD_LAYER_FORMAT_ID` name the tar rules, the
//!   chunking and the compressor, and one of them is part of every layer's derivation hash.

pub mod base;
pub mod clients;
pub mod debian;
pub mod entry;
pub mod exec;
pub mod hash;
pub mod http;
pub mod image;
pub mod import;
pub mod layer;
pub mod lock;
pub mod oci;
pub mod ops;
pub mod plan;
pub mod record;
pub mod reference;
pub mod registry;
pub mod remote;
pub mod resolution;
pub mod sbom;
pub mod source;
pub mod spec;
pub mod store;
pub mod tarcheck;
pub mod trust;
pub mod util;

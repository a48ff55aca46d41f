//! compose's integration tests: the real binary against real tools (umoci, skopeo,
//! oci-image-tool, podman). `.ci/run` installs the tools.

mod support;

mod aptrepo;
mod bases;
mod cli_errors;
mod debian;
mod incremental;
mod outputs;
mod packages;
mod registry;
mod remote;
mod repro;
mod store;

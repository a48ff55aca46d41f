//! compose's integration tests: the real binary against real tools (umoci, skopeo,
//! oci-image-tool, podman). `.ci/run` installs the tools.

// Test code panics on what it did not expect, and prints what helps read a failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout, clippy::print_stderr)]

mod support;

mod architecture;
mod bases;
mod cli_errors;
mod debian;
mod dockerfile;
mod incremental;
mod outputs;
mod packages;
mod registry;
mod remote;
mod repro;
mod sandbox;
mod steps;
mod store;
mod trees;

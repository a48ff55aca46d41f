//! One file per command: its call into `compose::ops` and what it prints (results on stdout,
//! reports on stderr).

pub mod build;
pub mod cache;
pub mod explain;
pub mod import;
pub mod lock;
pub mod plan;
pub mod push;

use compose::image::Pushed;

/// The line saying what a push sent, shown after `build --push` and `push`.
fn pushed_line(p: &Pushed) -> String {
    format!(
        "pushed {} ({} uploaded, {} mounted, {} already there; {})",
        p.reference,
        p.uploaded,
        p.mounted,
        p.existing,
        super::progress::human(p.uploaded_bytes)
    )
}

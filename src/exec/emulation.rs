//! Running steps of another architecture: a step on `linux/arm64` on an x86-64 machine needs the
//! kernel to hand arm64 programs to an emulator, a `binfmt_misc` handler with the `F` (fix
//! binary) flag, so that the interpreter is found from inside the sandbox. Debian's
//! qemu-user-static ships the handlers' definitions (`/usr/share/binfmts/qemu-*`); where one is
//! not registered, compose (as root) registers it from that definition, and says so; where it
//! cannot, the step is refused, saying what to install or to write instead.

use std::fs;
use std::path::Path;

use super::BuildError;
use crate::spec::Platform;

const BINFMT: &str = "/proc/sys/fs/binfmt_misc";

/// qemu's name of an OCI architecture.
fn qemu_arch(arch: &str) -> &str {
    match arch {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        "386" => "i386",
        "mips64le" => "mips64el",
        "mipsle" => "mipsel",
        other => other,
    }
}

/// Can step `step` run on `platform` here? With `register`, a missing handler is registered
/// from Debian's definition; returns what was registered, to be said.
pub fn check(step: &str, platform: &str, register: bool) -> Result<Option<String>, BuildError> {
    let here = Platform::build_machine();
    let arch = platform.split('/').nth(1).unwrap_or_default();
    // An x86-64 kernel runs 386 programs itself.
    if arch.is_empty() || arch == here.architecture || (here.architecture == "amd64" && arch == "386") {
        return Ok(None);
    }
    let qemu = qemu_arch(arch);
    let handler = Path::new(BINFMT).join(format!("qemu-{qemu}"));
    let state = || {
        let text = fs::read_to_string(&handler).unwrap_or_default();
        let enabled = text.lines().next() == Some("enabled");
        let fixed = text.lines().any(|l| l.strip_prefix("flags:").is_some_and(|f| f.contains('F')));
        (text, enabled, fixed)
    };
    let (mut text, mut enabled, mut fixed) = state();
    let mut registered = None;
    if text.is_empty() && register {
        match register_handler(qemu) {
            Ok(interpreter) => {
                registered = Some(format!(
                    "registered the binfmt_misc handler qemu-{qemu} (Debian's qemu-user-static, {interpreter}) to run {platform} \
                     steps; `echo -1 > {}` removes it",
                    handler.display()
                ));
                (text, enabled, fixed) = state();
            }
            Err(why) => {
                return Err(refuse(step, platform, &here, &format!("no binfmt_misc handler runs {arch} programs here, and {why}")));
            }
        }
    }
    if enabled && fixed {
        return Ok(registered);
    }
    let why = if text.is_empty() {
        format!("no binfmt_misc handler runs {arch} programs here (`{}` is missing)", handler.display())
    } else if !enabled {
        format!("the binfmt_misc handler `{}` is disabled", handler.display())
    } else {
        format!("the binfmt_misc handler `{}` lacks the F (fix binary) flag a sandbox needs", handler.display())
    };
    Err(refuse(step, platform, &here, &why))
}

fn refuse(step: &str, platform: &str, here: &Platform, why: &str) -> BuildError {
    BuildError::BadTree(format!(
        "step `{step}` runs on {platform}, and this machine is {here}: {why}. Install Debian's qemu-user-static (compose \
         registers its handlers when run as root), or give the step `platform \"build\"` to build for {platform} on this \
         machine (TARGETARCH and the like say the target)"
    ))
}

/// Register the handler of qemu architecture `qemu` from Debian's definition (mounting
/// `binfmt_misc` first if need be), with the `F` flag; returns its interpreter, or why not.
fn register_handler(qemu: &str) -> Result<String, String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("only root can register one".into());
    }
    let def_path = format!("/usr/share/binfmts/qemu-{qemu}");
    let def = fs::read_to_string(&def_path).map_err(|_| format!("`{def_path}` is missing (qemu-user-static is not installed)"))?;
    let field = |name: &str| def.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')).map(str::trim));
    let (Some(interpreter), Some(magic)) = (field("interpreter"), field("magic")) else {
        return Err(format!("`{def_path}` names no interpreter or magic"));
    };
    if !Path::new(interpreter).is_file() {
        return Err(format!("its interpreter `{interpreter}` is missing"));
    }
    let register = Path::new(BINFMT).join("register");
    if !register.exists() {
        mount_binfmt_misc()?;
    }
    let mut flags = String::from("F");
    if field("preserve") == Some("yes") {
        flags.push('P');
    }
    if field("credentials") == Some("yes") {
        flags.push('C');
    }
    let line =
        format!(":qemu-{qemu}:M:{}:{magic}:{}:{interpreter}:{flags}", field("offset").unwrap_or("0"), field("mask").unwrap_or_default());
    fs::write(&register, line).map_err(|e| format!("registering it in `{}` failed: {e}", register.display()))?;
    Ok(interpreter.to_string())
}

fn mount_binfmt_misc() -> Result<(), String> {
    let c = |s: &str| std::ffi::CString::new(s).unwrap_or_default();
    let (src, target, fstype) = (c("binfmt_misc"), c(BINFMT), c("binfmt_misc"));
    // SAFETY: every pointer is a valid NUL-terminated string that outlives the call.
    let rc = unsafe { libc::mount(src.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, std::ptr::null()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!("binfmt_misc is not mounted and cannot be: {}", std::io::Error::last_os_error()))
    }
}

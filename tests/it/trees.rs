//! Build steps' trees: what a step's output may hold, and what its errors say.

use crate::support::*;

/// A tools image (busybox from the host) and a step writing into its output.
fn spec(run: &str) -> String {
    format!(
        r#"
image "tools" {{
    export #false
    files {{
        copy "/bin/busybox" to="/bin/busybox" mode=0o755
        symlink "/bin/sh" target="busybox"
    }}
}}
step "maker" {{
    image "tools"
    run "sh" "-c" "{run}"
    output "/out"
}}
image "app" {{ files {{ copy from="maker" "/out" to="/app" }} }}
"#
    )
}

/// Guards against this: a FIFO or device in a step's output failed the build with "`/pipe` is a device,
/// FIFO or socket", naming neither the step nor the path as the step wrote it.
#[test]
fn special_files_in_a_step_output_name_the_step_and_the_path() {
    let ctx = TestContext::new();
    ctx.write("spec.kdl", spec("mkdir /out/sub; echo x > /out/x; mkfifo /out/sub/pipe"));
    let out = ctx.compose(&["build", "spec.kdl"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("`/out/sub/pipe` in the output of step maker is a device, FIFO or socket"), "{err}");
    // The message is the whole error: no cause made up to sit under it.
    assert!(!err.contains("special file"), "a made-up cause is printed: {err}");
}

//! Reading spec files: the spec's directory and name, non-UTF-8 bytes located
//! by line and column, and unreadable paths.

use super::*;

#[test]
fn parse_file_reads_and_names_dir() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("web.kdl");
    std::fs::write(&path, EXAMPLE).expect("write");
    let spec = parse_file(&path).expect("parses");
    assert_eq!(spec.dir, tmp.path());
    assert_eq!(spec.source.name(), path.display().to_string());
    assert_eq!(spec.images[0].name, "web");
}

#[test]
fn non_utf8_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("bad.kdl");
    // Line 3 is `    // hé <0xff> here`: the bad byte is the 12th byte of the
    // line (the 11th character: `é` takes two bytes).
    let bytes = b"image \"web\" {\n    tag \"1\"\n    // h\xc3\xa9 \xff here\n}\n";
    std::fs::write(&path, bytes).expect("write");
    let e = parse_file(&path).expect_err("not UTF-8");
    match &e {
        SpecError::NotUtf8 { line, column, byte, .. } => {
            assert_eq!((*line, *column, *byte), (3, 12, 0xff));
        }
        other => panic!("expected NotUtf8, got {other:?}"),
    }
    let message = e.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("line 3, column 12"), "{message}");
    let shown = render(&e).replace(&tmp.path().display().to_string(), "<tmp>");
    snapshot("spec_not_utf8", &shown);
}

#[test]
fn unreadable_files() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let e = parse_file(tmp.path()).expect_err("a directory");
    assert!(matches!(e, SpecError::Read { .. }));
    let shown = render(&e).replace(&tmp.path().display().to_string(), "<tmp>");
    snapshot("spec_read_directory", &shown);

    let missing = tmp.path().join("missing.kdl");
    let e = parse_file(&missing).expect_err("missing");
    assert!(e.to_string().contains(&missing.display().to_string()));
    let shown = render(&e).replace(&tmp.path().display().to_string(), "<tmp>");
    snapshot("spec_read_missing", &shown);
}

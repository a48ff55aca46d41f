//! Build arguments: `arg` declarations, `${NAME}` in strings, `--build-arg`
//! values, and values inserted literally.

use super::*;

/// Build arguments, once missing (ARG is in 4 of 11 Dockerfiles): `arg "NAME"
/// default=` and `${NAME}` in strings; `--build-arg` overrides; undeclared or missing values
/// are errors naming the file and line.
#[test]
fn build_arguments_are_declared_substituted_and_overridden() {
    let text = r#"arg "SUITE" default="bookworm"
arg "VERSION"
image "app" {
    tag "${VERSION}"
    base "debian:${SUITE}-slim"
    config { env PATH="/opt/bin:${PATH}" LABEL="$VERSION" }
}
"#;
    let given = [("VERSION".to_string(), "1.2.3".to_string())];
    let spec = parse_str_with(Path::new("web.kdl"), text, &given).unwrap_or_else(|e| panic!("{}", render(&e)));
    let img = &spec.images[0];
    assert_eq!(img.tag, "1.2.3");
    assert!(matches!(&img.base, Base::Registry { reference, .. } if reference == "docker.io/library/debian:bookworm-slim"));
    // Only declared names, braced: the environment's stay for later expansion.
    assert_eq!(img.config.env, [("PATH".to_string(), "/opt/bin:${PATH}".to_string()), ("LABEL".to_string(), "$VERSION".to_string())]);
    let trixie = [given[0].clone(), ("SUITE".to_string(), "trixie".to_string())];
    let spec = parse_str_with(Path::new("web.kdl"), text, &trixie).unwrap();
    assert!(matches!(&spec.images[0].base, Base::Registry { reference, .. } if reference.ends_with("debian:trixie-slim")));
    // VERSION has no default.
    let e = parse_str_with(Path::new("web.kdl"), text, &[]).unwrap_err();
    assert_eq!(codes(&e), ["missing_arg"]);
    assert!(render(&e).contains("web.kdl:2:1"), "{}", render(&e));
    let e = parse_str_with(Path::new("web.kdl"), text, &[given[0].clone(), ("NOPE".to_string(), "x".to_string())]).unwrap_err();
    assert_eq!(codes(&e), ["unknown_arg"]);
}

/// Build-arg values were once expanded twice: `--build-arg 'V=p${W}d'` gave `pwd` or
/// `p${W}d` depending on which `arg` came first. Docker keeps values as given: a value from the
/// command line or a default goes in literally, never expanded again.
#[test]
fn build_arg_values_are_inserted_literally_never_expanded_again() {
    let v = [("V".to_string(), "p${W}d".to_string())];
    for text in [
        "arg \"V\"\narg \"W\" default=\"w\"\narg \"D\" default=\"${W}\"\nimage \"app\" { config { env A=\"${V}\" B=\"${D}-${W}\" } }\n",
        "arg \"W\" default=\"w\"\narg \"D\" default=\"${W}\"\narg \"V\"\nimage \"app\" { config { env A=\"${V}\" B=\"${D}-${W}\" } }\n",
    ] {
        let spec = parse_str_with(Path::new("args.kdl"), text, &v).unwrap_or_else(|e| panic!("{}", render(&e)));
        assert_eq!(spec.images[0].config.env, [("A".to_string(), "p${W}d".to_string()), ("B".to_string(), "${W}-w".to_string())], "{text}");
    }
}

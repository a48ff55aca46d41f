//! Tests of the resolver: relation parsing, candidates, alternatives, virtual packages,
//! conflicts, installed packages, architectures, failures and backtracking.

use super::resolver::group_text;
use super::*;
use crate::debian::types::{ArchQual, MultiArch, Op, Package, Provide};

// --- helpers --------------------------------------------------------------------------

fn pkg(name: &str, version: &str, arch: &str) -> Package {
    Package {
        name: name.to_string(),
        version: version.parse().expect("test version"),
        architecture: arch.to_string(),
        multi_arch: MultiArch::No,
        essential: false,
        priority: None,
        section: None,
        source: None,
        homepage: None,
        maintainer: None,
        description: None,
        depends: Vec::new(),
        pre_depends: Vec::new(),
        provides: Vec::new(),
        conflicts: Vec::new(),
        breaks: Vec::new(),
        replaces: Vec::new(),
        filename: format!("pool/main/{name}_{version}_{arch}.deb"),
        size: 0,
        sha256: String::new(),
        installed_size: None,
        repository: 0,
    }
}

trait Build {
    fn depends(self, s: &str) -> Self;
    fn pre_depends(self, s: &str) -> Self;
    fn provides(self, s: &str) -> Self;
    fn conflicts(self, s: &str) -> Self;
    fn breaks(self, s: &str) -> Self;
    fn essential(self) -> Self;
    fn priority(self, p: &str) -> Self;
    fn repo(self, r: usize) -> Self;
    fn filename(self, f: &str) -> Self;
    fn multi_arch(self, ma: MultiArch) -> Self;
}

impl Build for Package {
    fn depends(mut self, s: &str) -> Self {
        self.depends = parse_relations(s).expect("test depends");
        self
    }
    fn pre_depends(mut self, s: &str) -> Self {
        self.pre_depends = parse_relations(s).expect("test pre-depends");
        self
    }
    fn provides(mut self, s: &str) -> Self {
        self.provides = parse_provides(s).expect("test provides");
        self
    }
    fn conflicts(mut self, s: &str) -> Self {
        self.conflicts = parse_relation_list(s).expect("test conflicts");
        self
    }
    fn breaks(mut self, s: &str) -> Self {
        self.breaks = parse_relation_list(s).expect("test breaks");
        self
    }
    fn essential(mut self) -> Self {
        self.essential = true;
        self
    }
    fn priority(mut self, p: &str) -> Self {
        self.priority = Some(p.to_string());
        self
    }
    fn repo(mut self, r: usize) -> Self {
        self.repository = r;
        self
    }
    fn filename(mut self, f: &str) -> Self {
        self.filename = f.to_string();
        self
    }
    fn multi_arch(mut self, ma: MultiArch) -> Self {
        self.multi_arch = ma;
        self
    }
}

fn universe(packages: Vec<Package>) -> Universe {
    Universe::new(packages, "amd64")
}

fn v(s: &str) -> Version {
    s.parse().expect("test version")
}

fn inst(name: &str, version: &str, arch: &str) -> (String, Version, String) {
    (name.to_string(), v(version), arch.to_string())
}

fn requests(reqs: &[&str]) -> Vec<Request> {
    reqs.iter().map(|r| Request::parse(r)).collect()
}

fn resolve_with(
    u: &Universe,
    reqs: &[&str],
    installed: &[(String, Version, String)],
    options: &ResolveOptions,
) -> Result<Vec<String>, ResolveError> {
    let res = resolve(u, &requests(reqs), installed, options)?;
    Ok(res.packages.iter().map(|&id| u.get(id).id()).collect())
}

/// `name=version` of each package to install.
fn ok(u: &Universe, reqs: &[&str]) -> Vec<String> {
    match resolve_with(u, reqs, &[], &ResolveOptions::default()) {
        Ok(v) => v,
        Err(e) => panic!("resolution failed: {e}"),
    }
}

/// The error message.
fn err(u: &Universe, reqs: &[&str]) -> String {
    err_with(u, reqs, &[])
}

fn err_with(u: &Universe, reqs: &[&str], installed: &[(String, Version, String)]) -> String {
    match resolve_with(u, reqs, installed, &ResolveOptions::default()) {
        Ok(v) => panic!("expected a failure, got {v:?}"),
        Err(e) => e.to_string(),
    }
}

fn reasons_of(u: &Universe, reqs: &[&str], name: &str) -> Vec<String> {
    let res = resolve(u, &requests(reqs), &[], &ResolveOptions::default()).expect("resolves");
    res.reasons.iter().find(|(id, _)| u.get(**id).name == name).map(|(_, r)| r.clone()).unwrap_or_default()
}

// --- relation parsing -----------------------------------------------------------------

#[test]
fn parses_relations() {
    let deps = parse_relations("libc6 (>= 2.34) | libc6-dev, foo:any, bar:native (<<2), baz:i386,").expect("parses");
    assert_eq!(deps.len(), 4);
    assert_eq!(deps[0].len(), 2);
    assert_eq!(deps[0][0].name, "libc6");
    assert_eq!(deps[0][0].constraint, Some((Op::Ge, v("2.34"))));
    assert_eq!(deps[0][1].constraint, None);
    assert_eq!(deps[1][0].arch, Some(ArchQual::Any));
    assert_eq!(deps[2][0].arch, Some(ArchQual::Native));
    assert_eq!(deps[2][0].constraint, Some((Op::Lt, v("2"))));
    assert_eq!(deps[3][0].arch, Some(ArchQual::Arch("i386".into())));
    let shown: Vec<String> = deps.iter().map(|g| group_text(g)).collect();
    assert_eq!(shown, ["libc6 (>= 2.34) | libc6-dev", "foo:any", "bar:native (<< 2)", "baz:i386"]);
}

#[test]
fn parses_obsolete_operators_and_provides() {
    let d = parse_relation("foo (< 1.0)").expect("parses");
    assert_eq!(d.constraint, Some((Op::Le, v("1.0"))));
    let d = parse_relation("foo (> 1:1.0-1)").expect("parses");
    assert_eq!(d.constraint, Some((Op::Ge, v("1:1.0-1"))));
    let p = parse_provides("awk, libfoo-abi (= 2.1)").expect("parses");
    assert_eq!(p[0], Provide { name: "awk".into(), version: None });
    assert_eq!(p[1].version, Some(v("2.1")));
    assert!(parse_relations("").expect("empty is fine").is_empty());
}

#[test]
fn rejects_bad_relations() {
    for bad in ["foo (>= )", "foo (~ 1)", "foo (>= 1", "a b", "foo:"] {
        assert!(parse_relations(bad).is_err(), "{bad} should not parse");
    }
    assert!(parse_relations("a,,b").is_ok());
    assert!(parse_relations("a | , b").is_err());
    let e = parse_provides("foo (>= 1)").expect_err("only = in provides");
    assert_eq!(e.to_string(), "invalid relation `foo (>= 1)`: a Provides may only carry `=`");
    let e = parse_relations("foo (>= 1").expect_err("unclosed");
    assert!(e.to_string().starts_with("invalid relation `foo (>= 1`: "), "{e}");
    // Architecture restrictions are dropped, as in Packages indexes.
    assert_eq!(parse_relations("foo [amd64]").expect("restrictions are ignored")[0][0].name, "foo");
}

// --- basics -------------------------------------------------------------------------------

fn curl_universe() -> Vec<Package> {
    vec![
        pkg("curl", "7.88.1-10", "amd64").depends("libcurl4 (= 7.88.1-10), libc6 (>= 2.34)"),
        pkg("libcurl4", "7.88.1-10", "amd64").depends("libc6 (>= 2.34), libssl3 (>= 3.0.0)"),
        pkg("libssl3", "3.0.11-1", "amd64").depends("libc6 (>= 2.34)"),
        pkg("libc6", "2.36-9", "amd64"),
        pkg("unrelated", "1", "amd64"),
    ]
}

#[test]
fn resolves_a_chain() {
    let u = universe(curl_universe());
    assert_eq!(ok(&u, &["curl"]), ["curl=7.88.1-10", "libc6=2.36-9", "libcurl4=7.88.1-10", "libssl3=3.0.11-1"]);
    assert_eq!(reasons_of(&u, &["curl"], "curl"), ["requested"]);
    assert_eq!(reasons_of(&u, &["curl"], "libssl3"), ["curl → libcurl4 → libssl3"]);
    assert_eq!(reasons_of(&u, &["curl"], "libc6"), ["curl → libc6", "curl → libcurl4 → libc6", "curl → libcurl4 → libssl3 → libc6"]);
}

#[test]
fn empty_request_resolves_to_nothing() {
    let u = universe(curl_universe());
    assert!(ok(&u, &[]).is_empty());
}

#[test]
fn duplicate_requests_are_merged_and_different_pins_refused() {
    let u = universe(vec![pkg("foo", "1", "all"), pkg("foo", "2", "all")]);
    assert_eq!(ok(&u, &["foo", "foo"]), ["foo=2"]);
    assert_eq!(err(&u, &["foo=1", "foo=2"]), "`foo` is requested as both =1 and =2");
}

#[test]
fn unknown_package_suggests_a_name() {
    let u = universe(curl_universe());
    assert_eq!(err(&u, &["curll"]), "unknown package `curll`; did you mean `curl`?");
    assert_eq!(err(&u, &["libssl"]), "unknown package `libssl`; did you mean `libssl3`?");
    assert_eq!(err(&u, &["zzzzzzzz"]), "unknown package `zzzzzzzz`");
}

#[test]
fn request_may_name_the_native_architecture() {
    let u = universe(curl_universe());
    assert_eq!(ok(&u, &["libc6:amd64"]), ["libc6=2.36-9"]);
    assert_eq!(err(&u, &["libc6:i386"]), "unknown package `libc6:i386`; did you mean `libc6`?");
}

#[test]
fn other_architectures_are_not_candidates() {
    let u = universe(vec![pkg("foo", "1", "i386"), pkg("bar", "1", "all"), pkg("baz", "1", "amd64")]);
    assert_eq!(err(&u, &["foo"]), "unknown package `foo`");
    assert_eq!(ok(&u, &["bar", "baz"]), ["bar=1", "baz=1"]);
}

// --- alternatives ---------------------------------------------------------------------

#[test]
fn first_satisfiable_alternative_wins() {
    let u = universe(vec![
        pkg("a", "1", "all").depends("missing | b (>= 2) | c | d"),
        pkg("b", "1", "all"),
        pkg("c", "1", "all"),
        pkg("d", "1", "all"),
    ]);
    assert_eq!(ok(&u, &["a"]), ["a=1", "c=1"]);
}

#[test]
fn first_alternative_wins_when_all_are_available() {
    let u = universe(vec![pkg("a", "1", "all").depends("b | c"), pkg("b", "1", "all"), pkg("c", "1", "all")]);
    assert_eq!(ok(&u, &["a"]), ["a=1", "b=1"]);
}

#[test]
fn selected_later_alternative_wins_over_adding_the_first() {
    let u = universe(vec![pkg("a", "1", "all").depends("b | c"), pkg("b", "1", "all"), pkg("c", "1", "all")]);
    assert_eq!(ok(&u, &["a", "c"]), ["a=1", "c=1"]);
    assert_eq!(ok(&u, &["c", "a"]), ["a=1", "c=1"]);
}

#[test]
fn installed_later_alternative_wins_over_adding_the_first() {
    let u = universe(vec![pkg("a", "1", "all").depends("b | c"), pkg("b", "1", "all"), pkg("c", "1", "all")]);
    let got = resolve_with(&u, &["a"], &[inst("c", "0.5", "amd64")], &ResolveOptions::default());
    assert_eq!(got, Ok(vec!["a=1".to_string()]));
}

#[test]
fn failing_alternatives_are_all_explained() {
    let u = universe(vec![pkg("a", "1", "all").depends("b (>= 2) | c"), pkg("b", "1-1", "all")]);
    assert_eq!(err(&u, &["a"]), "a → b (>= 2) | c: b (>= 2): no version matches (available: 1-1); c: no candidate");
}

#[test]
fn versioned_dependency_takes_the_highest_matching_version() {
    let u = universe(vec![
        pkg("a", "1", "all").depends("foo (<< 2)"),
        pkg("foo", "2", "all"),
        pkg("foo", "1.5", "all"),
        pkg("foo", "1", "all"),
    ]);
    assert_eq!(ok(&u, &["a"]), ["a=1", "foo=1.5"]);
}

// --- virtual packages -----------------------------------------------------------------

#[test]
fn virtual_package_with_one_provider() {
    let u = universe(vec![pkg("mutt", "2", "amd64").depends("mta"), pkg("exim", "4", "amd64").provides("mta")]);
    assert_eq!(ok(&u, &["mutt"]), ["exim=4", "mutt=2"]);
    assert_eq!(reasons_of(&u, &["mutt"], "exim"), ["mutt → mta → exim"]);
}

#[test]
fn provider_choice_prefers_priority_then_name() {
    let providers = vec![
        pkg("alpha", "1", "all").provides("mta").priority("optional"),
        pkg("beta", "1", "all").provides("mta").priority("optional"),
        pkg("zeta", "1", "all").provides("mta").priority("important"),
        pkg("nopri", "1", "all").provides("mta"),
    ];
    let mut all = providers.clone();
    all.push(pkg("mutt", "1", "all").depends("mta"));
    assert_eq!(ok(&universe(all), &["mutt"]), ["mutt=1", "zeta=1"]);
    let mut without_zeta: Vec<Package> = providers.into_iter().filter(|p| p.name != "zeta").collect();
    without_zeta.push(pkg("mutt", "1", "all").depends("mta"));
    assert_eq!(ok(&universe(without_zeta), &["mutt"]), ["alpha=1", "mutt=1"]);
}

#[test]
fn selected_provider_wins() {
    let u = universe(vec![
        pkg("mutt", "1", "all").depends("mta"),
        pkg("alpha", "1", "all").provides("mta").priority("required"),
        pkg("omega", "1", "all").provides("mta").priority("extra"),
    ]);
    assert_eq!(ok(&u, &["mutt", "omega"]), ["mutt=1", "omega=1"]);
}

#[test]
fn real_package_beats_provider() {
    let u = universe(vec![
        pkg("a", "1", "all").depends("foo"),
        pkg("bar", "1", "all").provides("foo").priority("required"),
        pkg("foo", "1", "all").priority("extra"),
    ]);
    assert_eq!(ok(&u, &["a"]), ["a=1", "foo=1"]);
}

#[test]
fn versioned_provides_must_match() {
    let u = universe(vec![
        pkg("a", "1", "all").depends("foo (>= 2)"),
        pkg("p1", "1", "all").provides("foo (= 1.5)"),
        pkg("p2", "1", "all").provides("foo (= 2.1)"),
        pkg("p3", "1", "all").provides("foo"),
    ]);
    assert_eq!(ok(&u, &["a"]), ["a=1", "p2=1"]);
}

#[test]
fn unversioned_provide_does_not_satisfy_a_versioned_dependency() {
    let u = universe(vec![pkg("a", "1", "all").depends("foo (>= 1)"), pkg("p3", "1", "all").provides("foo")]);
    assert_eq!(err(&u, &["a"]), "a → foo (>= 1): provided by p3, but not with a matching version");
    // Even when the unversioned provider is already selected.
    assert_eq!(err(&u, &["p3", "a"]), "a → foo (>= 1): provided by p3, but not with a matching version");
}

#[test]
fn versioned_provide_satisfies_an_unversioned_dependency() {
    let u = universe(vec![pkg("a", "1", "all").depends("foo"), pkg("p", "1", "all").provides("foo (= 3)")]);
    assert_eq!(ok(&u, &["a"]), ["a=1", "p=1"]);
}

#[test]
fn real_package_too_old_falls_back_to_versioned_provider() {
    let u =
        universe(vec![pkg("a", "1", "all").depends("foo (>= 2)"), pkg("foo", "1", "all"), pkg("bar", "1", "all").provides("foo (= 2)")]);
    assert_eq!(ok(&u, &["a"]), ["a=1", "bar=1"]);
}

#[test]
fn requested_virtual_package() {
    let one = universe(vec![pkg("exim", "4", "all").provides("mta")]);
    assert_eq!(ok(&one, &["mta"]), ["exim=4"]);
    let two = universe(vec![pkg("exim", "4", "all").provides("mta"), pkg("postfix", "3", "all").provides("mta")]);
    assert_eq!(err(&two, &["mta"]), "`mta` is a virtual package provided by exim, postfix; request one of them");
    assert_eq!(ok(&two, &["mta", "postfix"]), ["postfix=3"]);
    assert_eq!(err(&two, &["mta=1"]), "no version 1 of `mta`; available: none");
}

// --- versions, pins, repositories -----------------------------------------------------

#[test]
fn pin_selects_exact_version() {
    let u = universe(vec![pkg("foo", "1.0", "all"), pkg("foo", "2.0", "all")]);
    assert_eq!(ok(&u, &["foo"]), ["foo=2.0"]);
    assert_eq!(ok(&u, &["foo=1.0"]), ["foo=1.0"]);
}

#[test]
fn missing_pin_lists_available_versions() {
    let u = universe(vec![pkg("foo", "1.1-1", "all"), pkg("foo", "1.2-4", "all")]);
    assert_eq!(err(&u, &["foo=1.2-3"]), "no version 1.2-3 of `foo`; available: 1.2-4, 1.1-1");
    assert_eq!(err(&u, &["foo=not a version"]), "no version not a version of `foo`; available: 1.2-4, 1.1-1");
    let e = resolve(&u, &requests(&["foo=9"]), &[], &ResolveOptions::default());
    assert!(matches!(e, Err(ResolveError::NoVersion { .. })));
}

#[test]
fn pin_against_exact_dependency_is_a_clear_error() {
    let u = universe(vec![
        pkg("curl", "7.88.1-10", "amd64").depends("libcurl4 (= 7.88.1-10)"),
        pkg("libcurl4", "7.88.1-10", "amd64"),
        pkg("libcurl4", "7.88.1-9", "amd64"),
    ]);
    assert_eq!(err(&u, &["curl", "libcurl4=7.88.1-9"]), "curl → libcurl4 (= 7.88.1-10): libcurl4 7.88.1-9 is already selected (requested)");
    assert_eq!(ok(&u, &["curl", "libcurl4=7.88.1-10"]), ["curl=7.88.1-10", "libcurl4=7.88.1-10"]);
}

#[test]
fn highest_version_across_repositories() {
    let u = universe(vec![pkg("foo", "1.0-1", "amd64").repo(0), pkg("foo", "1.0-1+deb12u1", "amd64").repo(1)]);
    assert_eq!(ok(&u, &["foo"]), ["foo=1.0-1+deb12u1"]);
}

#[test]
fn equal_versions_prefer_lowest_repository_then_filename() {
    let u = universe(vec![
        pkg("foo", "1", "amd64").repo(2).filename("a.deb"),
        pkg("foo", "1", "amd64").repo(1).filename("z.deb"),
        pkg("foo", "1", "amd64").repo(1).filename("m.deb"),
    ]);
    let res = resolve(&u, &requests(&["foo"]), &[], &ResolveOptions::default()).expect("resolves");
    let chosen = u.get(res.packages[0]);
    assert_eq!((chosen.repository, chosen.filename.as_str()), (1, "m.deb"));
}

#[test]
fn epochs_order_versions() {
    let u = universe(vec![pkg("foo", "9.0", "all"), pkg("foo", "1:1.0", "all")]);
    assert_eq!(ok(&u, &["foo"]), ["foo=1:1.0"]);
}

// --- pre-depends ------------------------------------------------------------------------

#[test]
fn pre_depends_count() {
    let u = universe(vec![pkg("a", "1", "all").pre_depends("b (>= 1)").depends("c"), pkg("b", "1", "all"), pkg("c", "1", "all")]);
    assert_eq!(ok(&u, &["a"]), ["a=1", "b=1", "c=1"]);
    let u = universe(vec![pkg("a", "1", "all").pre_depends("b (>= 2)"), pkg("b", "1", "all")]);
    assert_eq!(err(&u, &["a"]), "a → b (>= 2): no version matches (available: 1)");
}

// --- conflicts and breaks -------------------------------------------------------------

#[test]
fn direct_conflict_between_requests() {
    let u = universe(vec![pkg("curl", "7.88", "amd64").conflicts("foo"), pkg("foo", "1.0", "amd64")]);
    assert_eq!(err(&u, &["curl", "foo"]), "curl 7.88 conflicts with foo 1.0 (Conflicts: foo)");
    assert_eq!(err(&u, &["foo", "curl"]), "curl 7.88 conflicts with foo 1.0 (Conflicts: foo)");
    let e = resolve(&u, &requests(&["curl", "foo"]), &[], &ResolveOptions::default());
    assert!(matches!(e, Err(ResolveError::Conflict { kind: RelationKind::Conflicts, .. })));
}

#[test]
fn versioned_conflict_only_applies_to_matching_versions() {
    let u = universe(vec![pkg("a", "1", "all").conflicts("b (<< 2)"), pkg("b", "1", "all"), pkg("b", "2", "all")]);
    assert_eq!(ok(&u, &["a", "b"]), ["a=1", "b=2"]);
    assert_eq!(err(&u, &["a", "b=1"]), "a 1 conflicts with b 1 (Conflicts: b (<< 2))");
}

#[test]
fn conflict_through_a_virtual_package() {
    let u = universe(vec![
        pkg("a", "1", "all").conflicts("mta"),
        pkg("exim", "4", "all").provides("mta").conflicts("mta"),
        pkg("postfix", "3", "all").provides("mta").conflicts("mta"),
    ]);
    assert_eq!(err(&u, &["a", "exim"]), "a 1 conflicts with exim 4 (Conflicts: mta)");
    assert_eq!(err(&u, &["exim", "a"]), "a 1 conflicts with exim 4 (Conflicts: mta)");
    // A package does not conflict with itself through what it provides, but two
    // providers of a virtual name they both conflict with cannot be together.
    assert_eq!(ok(&u, &["exim"]), ["exim=4"]);
    assert_eq!(err(&u, &["exim", "postfix"]), "postfix 3 conflicts with exim 4 (Conflicts: mta)");
}

#[test]
fn versioned_conflict_on_virtual_needs_versioned_provide() {
    let u = universe(vec![
        pkg("a", "1", "all").conflicts("abi (<< 2)"),
        pkg("old", "1", "all").provides("abi (= 1)"),
        pkg("new", "1", "all").provides("abi (= 2)"),
        pkg("plain", "1", "all").provides("abi"),
    ]);
    assert_eq!(err(&u, &["a", "old"]), "a 1 conflicts with old 1 (Conflicts: abi (<< 2))");
    assert_eq!(ok(&u, &["a", "new", "plain"]), ["a=1", "new=1", "plain=1"]);
}

#[test]
fn conflicting_alternative_is_skipped() {
    let u = universe(vec![
        pkg("x", "1", "all").depends("a | b"),
        pkg("a", "1", "all").conflicts("y"),
        pkg("b", "1", "all"),
        pkg("y", "1", "all"),
    ]);
    assert_eq!(ok(&u, &["y", "x"]), ["b=1", "x=1", "y=1"]);
    // Broken by what is selected, the other way round.
    let u =
        universe(vec![pkg("x", "1", "all").depends("a | b"), pkg("a", "1", "all"), pkg("b", "1", "all"), pkg("y", "1", "all").breaks("a")]);
    assert_eq!(ok(&u, &["y", "x"]), ["b=1", "x=1", "y=1"]);
}

#[test]
fn conflicting_provider_is_skipped() {
    let u = universe(vec![
        pkg("mutt", "1", "all").depends("mta"),
        pkg("exim", "4", "all").provides("mta").priority("important").conflicts("z"),
        pkg("postfix", "3", "all").provides("mta").priority("optional"),
        pkg("z", "1", "all"),
    ]);
    assert_eq!(ok(&u, &["z", "mutt"]), ["mutt=1", "postfix=3", "z=1"]);
    assert_eq!(ok(&u, &["mutt"]), ["exim=4", "mutt=1"]);
}

#[test]
fn breaks_with_version_constraints() {
    let u = universe(vec![
        pkg("a", "1", "all").breaks("b (<< 2)"),
        pkg("b", "1", "all"),
        pkg("b", "2", "all"),
        pkg("c", "1", "all").depends("d"),
        pkg("d", "1", "all").breaks("b (<< 2)"),
    ]);
    assert_eq!(err(&u, &["a", "b=1"]), "a 1 breaks b 1 (Breaks: b (<< 2))");
    assert_eq!(ok(&u, &["a", "b"]), ["a=1", "b=2"]);
    assert_eq!(err(&u, &["b=1", "c"]), "c → d: d 1 breaks b 1 (Breaks: b (<< 2))");
    let e = resolve(&u, &requests(&["a", "b=1"]), &[], &ResolveOptions::default());
    assert!(matches!(e, Err(ResolveError::Conflict { kind: RelationKind::Breaks, .. })));
}

#[test]
fn conflict_with_an_installed_package() {
    let u = universe(vec![pkg("foo", "1", "all").conflicts("bar"), pkg("bar", "1", "all")]);
    let base = [inst("foo", "1", "all")];
    assert_eq!(err_with(&u, &["bar"], &base), "installed foo 1 conflicts with bar 1 (Conflicts: bar)");
}

// --- essential, installed ---------------------------------------------------------------

#[test]
fn essential_packages_are_not_added_unless_asked_for() {
    let u = universe(vec![
        pkg("base-files", "12", "amd64").essential(),
        pkg("dash", "0.5", "amd64").essential(),
        pkg("curl", "1", "amd64"),
        pkg("tool", "1", "amd64").depends("dash"),
    ]);
    assert_eq!(ok(&u, &["curl"]), ["curl=1"]);
    assert_eq!(ok(&u, &["tool"]), ["dash=0.5", "tool=1"]);
    assert_eq!(ok(&u, &["base-files"]), ["base-files=12"]);
    let all = ResolveOptions { add_essential: true };
    assert_eq!(
        resolve_with(&u, &["curl"], &[inst("dash", "0.4", "amd64")], &all),
        Ok(vec!["base-files=12".to_string(), "curl=1".to_string()])
    );
    let res = resolve(&u, &requests(&["curl"]), &[], &all).expect("resolves");
    let bf = res.packages.iter().find(|&&id| u.get(id).name == "base-files").expect("added");
    assert_eq!(res.reasons[bf], ["essential"]);
}

#[test]
fn installed_packages_satisfy_dependencies() {
    let u = universe(curl_universe());
    let base = [inst("libc6", "2.36-9", "amd64"), inst("libssl3", "3.0.9-1", "amd64")];
    assert_eq!(
        resolve_with(&u, &["curl"], &base, &ResolveOptions::default()),
        Ok(vec!["curl=7.88.1-10".to_string(), "libcurl4=7.88.1-10".to_string()])
    );
}

#[test]
fn installed_package_too_old_is_upgraded() {
    let u = universe(curl_universe());
    let base = [inst("libc6", "2.31-13", "amd64")];
    let got = resolve_with(&u, &["libssl3"], &base, &ResolveOptions::default());
    assert_eq!(got, Ok(vec!["libc6=2.36-9".to_string(), "libssl3=3.0.11-1".to_string()]));
}

#[test]
fn installed_package_is_not_downgraded() {
    let u = universe(vec![pkg("a", "1", "all").depends("libc6 (<< 2.30)"), pkg("libc6", "2.28", "amd64")]);
    assert_eq!(
        err_with(&u, &["a"], &[inst("libc6", "2.36", "amd64")]),
        "a → libc6 (<< 2.30): installed libc6 2.36 would have to be downgraded to 2.28"
    );
}

#[test]
fn upgrade_that_breaks_an_earlier_relation_is_caught() {
    let u = universe(vec![
        pkg("a", "1", "all").depends("libc6 (<< 2.35)"),
        pkg("b", "1", "all").depends("libc6 (>= 2.36)"),
        pkg("libc6", "2.36", "amd64"),
    ]);
    assert_eq!(err_with(&u, &["a", "b"], &[inst("libc6", "2.34", "amd64")]), "a → libc6 (<< 2.35): libc6 2.36 is selected (b → libc6)");
}

#[test]
fn requested_installed_package_is_not_added_again() {
    let u = universe(vec![pkg("foo", "1", "all"), pkg("foo", "2", "all")]);
    let base = [inst("foo", "2", "all")];
    let none: Vec<String> = Vec::new();
    assert_eq!(resolve_with(&u, &["foo"], &base, &ResolveOptions::default()), Ok(none.clone()));
    assert_eq!(resolve_with(&u, &["foo=2"], &base, &ResolveOptions::default()), Ok(none));
    assert_eq!(resolve_with(&u, &["foo=1"], &base, &ResolveOptions::default()), Ok(vec!["foo=1".to_string()]));
    let older = [inst("foo", "1", "all")];
    assert_eq!(resolve_with(&u, &["foo"], &older, &ResolveOptions::default()), Ok(vec!["foo=2".to_string()]));
    // Installed but absent from the repositories: still there.
    let u = universe(vec![]);
    assert_eq!(resolve_with(&u, &["bar"], &[inst("bar", "1", "amd64")], &ResolveOptions::default()), Ok(vec![]));
}

#[test]
fn installed_provider_satisfies_virtual_dependency() {
    let u = universe(vec![
        pkg("a", "1", "all").depends("awk"),
        pkg("mawk", "1.3", "amd64").provides("awk"),
        pkg("gawk", "5", "amd64").provides("awk").priority("required"),
    ]);
    let base = [inst("mawk", "1.3", "amd64")];
    assert_eq!(resolve_with(&u, &["a"], &base, &ResolveOptions::default()), Ok(vec!["a=1".to_string()]));
}

// --- architecture qualifiers -----------------------------------------------------------

#[test]
fn any_and_native_qualifiers() {
    let u = universe(vec![
        pkg("a", "1", "amd64").depends("python3:any (>= 3.11), perl:native, data:any"),
        pkg("python3", "3.11.2", "amd64").multi_arch(MultiArch::Allowed),
        pkg("perl", "5.36", "amd64"),
        pkg("data", "1", "all"),
    ]);
    assert_eq!(ok(&u, &["a"]), ["a=1", "data=1", "perl=5.36", "python3=3.11.2"]);
}

#[test]
fn qualifier_for_a_foreign_architecture() {
    let u = universe(vec![pkg("a", "1", "amd64").depends("b:i386"), pkg("b", "1", "amd64"), pkg("c", "1", "amd64").depends("b:amd64")]);
    assert_eq!(err(&u, &["a"]), "a → b:i386: no candidate for architecture i386 (only amd64 and all are available)");
    assert_eq!(ok(&u, &["c"]), ["b=1", "c=1"]);
    let base = [inst("b", "1", "i386")];
    assert_eq!(resolve_with(&u, &["a"], &base, &ResolveOptions::default()), Ok(vec!["a=1".to_string()]));
}

#[test]
fn installed_foreign_architecture_does_not_satisfy_unqualified_dependency() {
    let u = universe(vec![pkg("a", "1", "amd64").depends("b"), pkg("b", "1", "amd64")]);
    let base = [inst("b", "1", "i386")];
    assert_eq!(resolve_with(&u, &["a"], &base, &ResolveOptions::default()), Ok(vec!["a=1".to_string(), "b=1".to_string()]));
}

// --- cycles, failures -------------------------------------------------------------------

#[test]
fn dependency_cycle_resolves() {
    let u =
        universe(vec![pkg("a", "1", "all").depends("b"), pkg("b", "1", "all").pre_depends("a (>= 1)"), pkg("c", "1", "all").depends("c")]);
    assert_eq!(ok(&u, &["a"]), ["a=1", "b=1"]);
    assert_eq!(ok(&u, &["b"]), ["a=1", "b=1"]);
    assert_eq!(ok(&u, &["c"]), ["c=1"]);
}

#[test]
fn unsatisfiable_chain_is_shown_from_the_request() {
    let u = universe(vec![
        pkg("curl", "7.88.1-10+deb12u12", "amd64").depends("libcurl4 (= 7.88.1-10+deb12u12)"),
        pkg("libcurl4", "7.88.1-10+deb12u12", "amd64").depends("libssl3 (>= 3.0.0)"),
    ]);
    assert_eq!(err(&u, &["curl"]), "curl → libcurl4 (= 7.88.1-10+deb12u12) → libssl3 (>= 3.0.0): no candidate");
    let e = resolve(&u, &requests(&["curl"]), &[], &ResolveOptions::default());
    assert_eq!(
        e,
        Err(ResolveError::Unsatisfiable {
            chain: vec!["curl".into(), "libcurl4 (= 7.88.1-10+deb12u12)".into()],
            relation: "libssl3 (>= 3.0.0)".into(),
            detail: "no candidate".into(),
        })
    );
}

#[test]
fn versioned_failure_lists_available_versions() {
    let u = universe(vec![
        pkg("curl", "7.88.1-10", "amd64").depends("libcurl4 (= 7.88.1-10)"),
        pkg("libcurl4", "7.88.1-10", "amd64").depends("libssl3 (>= 3.0.9)"),
        pkg("libssl3", "3.0.8-1", "amd64").repo(0),
        pkg("libssl3", "3.0.7-1", "amd64").repo(1),
    ]);
    assert_eq!(err(&u, &["curl"]), "curl → libcurl4 (= 7.88.1-10) → libssl3 (>= 3.0.9): no version matches (available: 3.0.8-1, 3.0.7-1)");
}

#[test]
fn failure_below_a_provider_shows_the_virtual_hop() {
    let u = universe(vec![pkg("mutt", "1", "all").depends("mta"), pkg("exim", "4", "all").provides("mta").depends("libdb (>= 5)")]);
    assert_eq!(err(&u, &["mutt"]), "mutt → mta → exim → libdb (>= 5): no candidate");
}

// --- backtracking -----------------------------------------------------------------------

#[test]
fn backtracks_to_the_next_alternative() {
    let u = universe(vec![pkg("a", "1", "all").depends("b | c"), pkg("b", "1", "all").depends("missing"), pkg("c", "1", "all")]);
    assert_eq!(ok(&u, &["a"]), ["a=1", "c=1"]);
}

#[test]
fn backtracks_over_a_later_conflict() {
    let u = universe(vec![
        pkg("a", "1", "all").depends("b | c, d"),
        pkg("b", "1", "all"),
        pkg("c", "1", "all"),
        pkg("d", "1", "all").conflicts("b"),
    ]);
    assert_eq!(ok(&u, &["a"]), ["a=1", "c=1", "d=1"]);
}

#[test]
fn backtracks_deep_choices() {
    // The first choice's grandchild fails; the second provider works.
    let u = universe(vec![
        pkg("app", "1", "all").depends("lib-virtual"),
        pkg("lib-a", "1", "all").provides("lib-virtual").priority("required").depends("helper"),
        pkg("helper", "1", "all").depends("tool-x | tool-y"),
        pkg("tool-x", "1", "all").depends("nowhere"),
        pkg("tool-y", "1", "all").depends("nowhere-either"),
        pkg("lib-b", "1", "all").provides("lib-virtual").priority("optional"),
    ]);
    assert_eq!(ok(&u, &["app"]), ["app=1", "lib-b=1"]);
}

#[test]
fn exhausted_alternatives_report_the_first_path() {
    let u = universe(vec![pkg("a", "1", "all").depends("b | c"), pkg("b", "1", "all").depends("x"), pkg("c", "1", "all").depends("y")]);
    assert_eq!(err(&u, &["a"]), "a → b → x: no candidate");
}

#[test]
fn failure_no_choice_can_fix_is_reported_as_is() {
    let u = universe(vec![
        pkg("a", "1", "all").depends("b | c, z"),
        pkg("b", "1", "all").depends("missing"),
        pkg("c", "1", "all"),
        pkg("z", "1", "all").depends("nothere"),
    ]);
    assert_eq!(err(&u, &["a"]), "a → z → nothere: no candidate");
}

#[test]
fn independent_choices_do_not_multiply() {
    let mut packages = Vec::new();
    let mut deps = Vec::new();
    for i in 0..40 {
        deps.push(format!("a{i} | b{i}"));
        packages.push(pkg(&format!("a{i}"), "1", "all").depends(&format!("x{i} | y{i}")));
        packages.push(pkg(&format!("b{i}"), "1", "all"));
        packages.push(pkg(&format!("x{i}"), "1", "all").depends("missing"));
        packages.push(pkg(&format!("y{i}"), "1", "all"));
    }
    deps.push("last".to_string());
    packages.push(pkg("root", "1", "all").depends(&deps.join(", ")));
    packages.push(pkg("last", "1", "all").depends("gone"));
    let u = universe(packages);
    assert_eq!(err(&u, &["root"]), "root → last → gone: no candidate");
    // Without the final failure, each x fails and its y is taken instead.
    let mut fine: Vec<Package> = u.packages().to_vec();
    if let Some(last) = fine.iter_mut().find(|p| p.name == "last") {
        last.depends.clear();
    }
    let u = universe(fine);
    let got = ok(&u, &["root"]);
    assert_eq!(got.len(), 1 + 40 * 2 + 1);
    assert!(got.iter().all(|p| !p.starts_with('x') && !p.starts_with('b')));
}

#[test]
fn backtracking_is_bounded() {
    // Every a_i has two options that both fail only at the very end, because of a
    // conflict with something the later choices bring in: the search must stop.
    let mut packages = Vec::new();
    let mut deps = Vec::new();
    for i in 0..30 {
        deps.push(format!("p{i} | q{i}"));
        packages.push(pkg(&format!("p{i}"), "1", "all").provides("token"));
        packages.push(pkg(&format!("q{i}"), "1", "all").provides("token"));
    }
    deps.push("end".to_string());
    packages.push(pkg("root", "1", "all").depends(&deps.join(", ")));
    packages.push(pkg("end", "1", "all").conflicts("token"));
    let u = universe(packages);
    let msg = err(&u, &["root"]);
    assert_eq!(msg, "root → end: end 1 conflicts with p0 1 (Conflicts: token)");
}

// --- determinism ------------------------------------------------------------------------

fn rich_universe() -> Vec<Package> {
    vec![
        pkg("app", "2", "amd64").depends("libfoo (>= 1) | libfoo-compat, mta, python3:any, data"),
        pkg("app", "1", "amd64").repo(1),
        pkg("libfoo", "1.2", "amd64").depends("libc6").repo(0),
        pkg("libfoo", "1.2", "amd64").depends("libc6").repo(1),
        pkg("libfoo-compat", "1", "amd64"),
        pkg("exim", "4", "amd64").provides("mta").priority("standard").depends("libc6"),
        pkg("postfix", "3", "amd64").provides("mta").priority("standard"),
        pkg("courier", "1", "amd64").provides("mta").priority("optional"),
        pkg("python3", "3.11", "amd64").multi_arch(MultiArch::Allowed).depends("libc6"),
        pkg("data", "1", "all").depends("tzdata | tzdata-legacy"),
        pkg("tzdata", "2024a", "all"),
        pkg("tzdata", "2024b", "all").repo(1),
        pkg("tzdata-legacy", "2024b", "all"),
        pkg("libc6", "2.36", "amd64"),
        pkg("libc6", "2.36", "i386"),
    ]
}

fn summary(u: &Universe, reqs: &[&str]) -> Vec<(String, Vec<String>)> {
    let res = resolve(u, &requests(reqs), &[], &ResolveOptions::default()).expect("resolves");
    res.packages
        .iter()
        .map(|id| {
            let p = u.get(*id);
            (format!("{} {} {}", p.id(), p.architecture, p.repository), res.reasons[id].clone())
        })
        .collect()
}

#[test]
fn shuffled_input_gives_the_same_result() {
    let base = rich_universe();
    let expected = summary(&universe(base.clone()), &["app"]);
    assert_eq!(
        expected.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(),
        [
            "app=2 amd64 0",
            "data=1 all 0",
            "exim=4 amd64 0",
            "libc6=2.36 amd64 0",
            "libfoo=1.2 amd64 0",
            "python3=3.11 amd64 0",
            "tzdata=2024b all 1",
        ]
    );
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..20 {
        let mut shuffled = base.clone();
        for i in (1..shuffled.len()).rev() {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let j = (seed >> 33) as usize % (i + 1);
            shuffled.swap(i, j);
        }
        assert_eq!(summary(&universe(shuffled), &["app"]), expected);
    }
    let mut reversed = base;
    reversed.reverse();
    assert_eq!(summary(&universe(reversed), &["app"]), expected);
}

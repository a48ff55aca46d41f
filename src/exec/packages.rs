//! Executing the Debian derivations: fetching `.deb`s (fixed-output, verified by sha256 before
//! they enter the store), installing a package's data as a layer, merging package layers past the
//! layer budget, building the metadata layer from what packages ship, and checking that no two
//! packages of an image ship the same path with different content (unless one `Replaces` the
//! other).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::PathBuf;

use petgraph::graph::NodeIndex;

use crate::clients::Clients;
use crate::debian::install::{self, DebError, InstallOptions};
use crate::hash::Sha256;
use crate::http::{HttpError, Sink};
use crate::layer::{self, LayerWriter};
use crate::plan::{self, BlobDrv, DebLayerDrv, DrvKind, FetchDrv, ImageDrv, MergedLayerDrv, MetaDrv, Plan, PlannedEntry};
pub use crate::record::shape::{DEB_MEDIA_TYPE, FACTS_MEDIA_TYPE, FILES_MEDIA_TYPE, LICENCES_MEDIA_TYPE};
use crate::store::{self, Output, Record, Store, StoreError};

use super::{output, BuildError};

#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("no mirror to download `{package}` from: {reason}")]
    NoMirror { package: String, reason: String },
    #[error(
        "the mirror of `{repository}` no longer has `{package}` ({url}); run `compose lock --update` to move to the versions it has now"
    )]
    Gone { package: String, repository: String, url: String },
    #[error("cannot download `{package}`")]
    Download {
        package: String,
        #[source]
        source: HttpError,
    },
    #[error("`{package}` from {url} does not match the lockfile: expected sha256 {expected} ({expected_size} bytes), got {actual} ({actual_size} bytes)")]
    Mismatch { package: String, url: String, expected: String, expected_size: u64, actual: String, actual_size: u64 },
    #[error("cannot install `{package}`")]
    Install {
        package: String,
        #[source]
        source: DebError,
    },
    #[error("packages `{a}` and `{b}` both ship `{path}` with different content, and neither declares `Replaces` on the other")]
    Conflict { path: String, a: String, b: String },
    #[error("cannot merge package layers")]
    Merge(#[source] io::Error),
    #[error("cannot merge package layers")]
    MergeLayer(#[source] layer::LayerError),
    #[error("the file list of a package layer is damaged: {0}")]
    Files(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A download sink: a store temporary file that hashes what it gets, and starts over on a retry.
struct HashingFile(crate::hash::HashingWriter<File>);

impl Write for HashingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl Sink for HashingFile {
    fn reset(&mut self) -> io::Result<()> {
        self.0.inner.reset()?;
        self.0.restart();
        Ok(())
    }
}

/// Download a `.deb` into the store, verified against its pinned sha256 and size.
pub fn fetch(f: &FetchDrv, store: &Store, clients: &Clients) -> Result<Output, BuildError> {
    let out = Output { digest: f.sha256, size: f.size, media_type: DEB_MEDIA_TYPE.into(), diff_id: None };
    if store.has_blob(&f.sha256) {
        return Ok(out);
    }
    let url = f.url.clone().map_err(|reason| PackageError::NoMirror { package: f.package.clone(), reason })?;
    let http = clients.http().map_err(|source| PackageError::Download { package: f.package.clone(), source })?;
    let tmp = store.temp_file()?;
    let file = tmp.reopen().map_err(crate::util::io_err::<StoreError>("open", tmp.path()))?;
    let mut sink = HashingFile(crate::hash::HashingWriter::new(file));
    http.download(&url, &mut sink).map_err(|source| match source {
        HttpError::NotFound { url } => PackageError::Gone { package: f.package.clone(), repository: f.repository.clone(), url },
        source => PackageError::Download { package: f.package.clone(), source },
    })?;
    let (actual, n, _) = sink.0.finish();
    if actual != f.sha256 || n != f.size {
        return Err(PackageError::Mismatch {
            package: f.package.clone(),
            url: crate::util::redact_url(&url),
            expected: f.sha256.hex(),
            expected_size: f.size,
            actual: actual.hex(),
            actual_size: n,
        }
        .into());
    }
    store.commit_blob(tmp, &f.sha256)?;
    Ok(out)
}

/// Bring a base image's layer into the store, verified by its digest and size.
pub fn base_blob(b: &BlobDrv, store: &Store, clients: &Clients) -> Result<Output, BuildError> {
    let l = &b.layer;
    let source = crate::base::LayerSource { reference: &b.reference, source: &b.source };
    crate::base::pull_layer(&source, l, store, clients)?;
    Ok(Output { digest: l.digest, size: l.size, media_type: l.media_type.clone(), diff_id: Some(l.diff_id) })
}

fn deb_path(plan: &Plan, fetch: NodeIndex, deps: &HashMap<NodeIndex, Record>, store: &Store) -> Result<PathBuf, BuildError> {
    let rec = deps.get(&fetch).ok_or_else(|| BuildError::MissingOutput(plan.graph[fetch].name.clone(), "file"))?;
    Ok(store.blob_path(&output(rec, "file")?.digest))
}

/// Store a layer's file list (path → md5 or link target), for the conflict check.
fn put_files(store: &Store, files: &BTreeMap<String, String>) -> Result<Output, BuildError> {
    let bytes = serde_json::to_vec(files).map_err(|e| PackageError::Files(e.to_string()))?;
    let digest = store.put_bytes(&bytes)?;
    Ok(Output { digest, size: bytes.len() as u64, media_type: FILES_MEDIA_TYPE.into(), diff_id: None })
}

fn read_files(store: &Store, o: &Output) -> Result<BTreeMap<String, String>, BuildError> {
    let bytes = store.read_blob(&o.digest)?;
    Ok(serde_json::from_slice(&bytes).map_err(|e| PackageError::Files(e.to_string()))?)
}

/// One package's data as a layer, with its file list and the licences its `copyright` declares.
pub fn deb_layer(plan: &Plan, d: &DebLayerDrv, deps: &HashMap<NodeIndex, Record>, store: &Store) -> Result<DebOutputs, BuildError> {
    let deb = deb_path(plan, d.fetch, deps, store)?;
    let tmp = store.temp_file()?;
    let sink = store::buffered(&tmp)?;
    let name = d.package.split('=').next().unwrap_or(&d.package).to_string();
    let copyright = format!("/usr/share/doc/{name}/copyright");
    let opts = InstallOptions { epoch: d.epoch, merged_usr: d.merged_usr, emulate: d.emulate, keep: vec![copyright.clone()] };
    let spill = store.tmp_dir();
    let writer = LayerWriter::with(sink, d.compression, Some(store.chunk_cache()));
    let (mut sink, installed) = install::install_layer(&deb, &opts, writer, &spill)
        .map_err(|source| PackageError::Install { package: d.package.clone(), source })?;
    sink.flush().map_err(|source| BuildError::Write { name: d.package.clone(), source })?;
    drop(sink);
    let digest = Sha256(installed.digests.digest);
    store.commit_blob(tmp, &digest)?;
    store.keep_chunks(&digest, &installed.chunks);
    let mut files: BTreeMap<String, String> = BTreeMap::new();
    for f in &installed.files {
        let v = installed.file_md5.get(f).cloned().unwrap_or_else(|| "link".to_string());
        files.insert(f.clone(), v);
    }
    let layer = Output {
        digest,
        size: installed.digests.size,
        media_type: d.compression.media_type().into(),
        diff_id: Some(Sha256(installed.digests.diff_id)),
    };
    let licences: Vec<String> =
        installed.kept.get(&copyright).map(|b| crate::sbom::dep5_licences(&String::from_utf8_lossy(b))).unwrap_or_default();
    let bytes = serde_json::to_vec(&licences).map_err(|e| PackageError::Files(e.to_string()))?;
    let lic_digest = store.put_bytes(&bytes)?;
    let lic = Output { digest: lic_digest, size: bytes.len() as u64, media_type: LICENCES_MEDIA_TYPE.into(), diff_id: None };
    let status_digest = store.put_bytes(installed.status.as_bytes())?;
    let status = Output { digest: status_digest, size: installed.status.len() as u64, media_type: STATUS_MEDIA_TYPE.into(), diff_id: None };
    let facts_bytes = serde_json::to_vec(&installed.facts).map_err(|e| PackageError::Files(e.to_string()))?;
    let facts_digest = store.put_bytes(&facts_bytes)?;
    let facts = Output { digest: facts_digest, size: facts_bytes.len() as u64, media_type: FACTS_MEDIA_TYPE.into(), diff_id: None };
    Ok(DebOutputs { layer, files: put_files(store, &files)?, licences: lic, status, facts })
}

/// What a package's layer derivation yields.
pub struct DebOutputs {
    pub layer: Output,
    /// Path → md5 (or `link`) of what it installs, for the conflict check.
    pub files: Output,
    pub licences: Output,
    /// Its paragraph of the dpkg status file.
    pub status: Output,
    /// What its scripts and control files say (alternatives, trigger interests).
    pub facts: Output,
}

/// Media type of a package's dpkg status paragraph.
const STATUS_MEDIA_TYPE: &str = super::TEXT_MEDIA_TYPE;

/// Licences recorded for a package layer (empty when unknown).
pub fn licences_of(store: &Store, rec: &Record) -> Vec<String> {
    rec.outputs
        .get("licences")
        .and_then(|o| store.read_blob(&o.digest).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// One entry of a layer being merged.
struct Head<'a, R: Read> {
    path: String,
    entry: tar::Entry<'a, R>,
}

fn next_head<'a, R: Read>(it: &mut tar::Entries<'a, R>) -> Result<Option<Head<'a, R>>, PackageError> {
    match it.next() {
        None => Ok(None),
        Some(e) => {
            let entry = e.map_err(PackageError::Merge)?;
            let p = entry.path().map_err(PackageError::Merge)?;
            let s = p.to_str().ok_or_else(|| PackageError::Files("non-UTF-8 path in a layer".into()))?;
            let path = format!("/{}", s.trim_start_matches("./").trim_end_matches('/'));
            Ok(Some(Head { path, entry }))
        }
    }
}

/// Merge package layers (each sorted) into one, streaming: a k-way merge by path. For a path in
/// several layers the last layer's entry wins (directories: the first).
pub fn merged_layer(
    name: &str,
    plan: &Plan,
    m: &MergedLayerDrv,
    deps: &HashMap<NodeIndex, Record>,
    store: &Store,
) -> Result<(Output, Output), BuildError> {
    let mut archives = Vec::new();
    let mut files: BTreeMap<String, String> = BTreeMap::new();
    for &p in &m.parts {
        let rec = deps.get(&p).ok_or_else(|| BuildError::MissingOutput(plan.graph[p].name.clone(), "layer"))?;
        let layer = output(rec, "layer")?;
        let f = File::open(store.blob_path(&layer.digest)).map_err(PackageError::Merge)?;
        archives.push(tar::Archive::new(layer::decoder(&layer.media_type, BufReader::new(f)).map_err(PackageError::Merge)?));
        files.extend(read_files(store, output(rec, "files")?)?);
    }
    let mut iters = Vec::new();
    for a in archives.iter_mut() {
        iters.push(a.entries().map_err(PackageError::Merge)?);
    }
    let mut heads = Vec::new();
    for it in iters.iter_mut() {
        heads.push(next_head(it)?);
    }
    let tmp = store.temp_file()?;
    let mut w = LayerWriter::with(store::buffered(&tmp)?, m.compression, Some(store.chunk_cache()));
    while let Some(min) = heads.iter().flatten().map(|h| h.path.clone()).min_by(|a, b| a.as_bytes().cmp(b.as_bytes())) {
        let holders: Vec<usize> = (0..heads.len()).filter(|&i| heads[i].as_ref().is_some_and(|h| h.path == min)).collect();
        let is_dir = |i: usize| heads[i].as_ref().is_some_and(|h| h.entry.header().entry_type().is_dir());
        let chosen = if holders.iter().all(|&i| is_dir(i)) { holders[0] } else { holders[holders.len() - 1] };
        {
            let Some(head) = heads[chosen].as_mut() else { break };
            let h = head.entry.header();
            let t = h.entry_type();
            let link = || -> Result<String, PackageError> {
                let l = head.entry.link_name().map_err(PackageError::Merge)?.unwrap_or_default();
                Ok(l.to_string_lossy().into_owned())
            };
            let kind = if t.is_dir() {
                layer::EntryKind::Dir
            } else if t.is_symlink() {
                layer::EntryKind::Symlink { target: link()? }
            } else if t.is_hard_link() {
                layer::EntryKind::Hardlink { target: format!("/{}", link()?.trim_start_matches('/')) }
            } else {
                layer::EntryKind::File { size: h.size().map_err(PackageError::Merge)? }
            };
            let entry = layer::Entry {
                path: min.clone(),
                mode: h.mode().map_err(PackageError::Merge)? & 0o7777,
                uid: h.uid().map_err(PackageError::Merge)? as u32,
                gid: h.gid().map_err(PackageError::Merge)? as u32,
                mtime: h.mtime().map_err(PackageError::Merge)?,
                kind,
            };
            let data: Option<&mut dyn Read> =
                if matches!(entry.kind, layer::EntryKind::File { .. }) { Some(&mut head.entry) } else { None };
            w.append(&entry, data).map_err(PackageError::MergeLayer)?;
        }
        for i in holders {
            heads[i] = next_head(&mut iters[i])?;
        }
    }
    let (mut sink, digests, chunks) = w.finish_with_chunks().map_err(PackageError::MergeLayer)?;
    sink.flush().map_err(|source| BuildError::Write { name: name.to_string(), source })?;
    drop(sink);
    let digest = Sha256(digests.digest);
    store.commit_blob(tmp, &digest)?;
    store.keep_chunks(&digest, &chunks);
    let layer =
        Output { digest, size: digests.size, media_type: m.compression.media_type().into(), diff_id: Some(Sha256(digests.diff_id)) };
    Ok((layer, put_files(store, &files)?))
}

/// The metadata layer's entries, reading base-passwd's and ca-certificates' files from their debs.
pub fn meta_entries(m: &MetaDrv, deps: &HashMap<NodeIndex, Record>, store: &Store) -> Result<Vec<PlannedEntry>, BuildError> {
    let deb_of = |n: NodeIndex| -> Result<PathBuf, BuildError> {
        let rec = deps.get(&n).ok_or_else(|| BuildError::MissingOutput("package download".into(), "file"))?;
        Ok(store.blob_path(&output(rec, "file")?.digest))
    };
    let masters = match m.base_passwd {
        Some(n) => crate::debian::effects::accounts::masters(&deb_of(n)?)
            .map_err(|source| PackageError::Install { package: "base-passwd".into(), source })?,
        None => None,
    };
    let mut certificates = Vec::new();
    if let Some(n) = m.ca_certificates {
        let deb = deb_of(n)?;
        certificates = install::read_files(&deb, &|p: &str| p.starts_with("/usr/share/ca-certificates/") && p.ends_with(".crt"))
            .map_err(|source| PackageError::Install { package: "ca-certificates".into(), source })?;
    }
    // dpkg's status file: every package's paragraph, by name (an external base's own first).
    let mut paragraphs: Vec<(String, String)> = Vec::new();
    for &n in &m.statuses {
        let rec = deps.get(&n).ok_or_else(|| BuildError::MissingOutput("package layer".into(), "status"))?;
        let text = String::from_utf8_lossy(&store.read_blob(&output(rec, "status")?.digest)?).into_owned();
        let key = text.lines().find_map(|l| l.strip_prefix("Package:")).unwrap_or_default().trim().to_string();
        paragraphs.push((key, text));
    }
    paragraphs.sort();
    // update-alternatives, as the packages' postinst would call it: every registration, in
    // package order, kept where its paths exist in the image.
    let mut registrations: Vec<crate::debian::effects::alternatives::Registration> = Vec::new();
    let mut installed: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    let mut ordered: Vec<(String, NodeIndex)> = Vec::new();
    for &n in &m.statuses {
        let rec = deps.get(&n).ok_or_else(|| BuildError::MissingOutput("package layer".into(), "facts"))?;
        installed.extend(read_files(store, output(rec, "files")?)?.into_keys());
        let name = rec.inputs.get("package").cloned().unwrap_or_default();
        ordered.push((name, n));
    }
    ordered.sort();
    // …and dpkg's trigger interests: triggers/File (file triggers) and triggers/NAME.
    let mut file_triggers = String::new();
    let mut named: BTreeMap<String, String> = BTreeMap::new();
    for (_, n) in &ordered {
        let Some(rec) = deps.get(n) else { continue };
        let bytes = store.read_blob(&output(rec, "facts")?.digest)?;
        let facts: install::ScriptFacts = serde_json::from_slice(&bytes).map_err(|e| PackageError::Files(e.to_string()))?;
        registrations.extend(facts.alternatives);
        for (trigger, noawait) in facts.interests {
            let who = if noawait { format!("{}/noawait", facts.db_name) } else { facts.db_name.clone() };
            if trigger.starts_with('/') {
                file_triggers.push_str(&format!("{trigger} {who}\n"));
            } else {
                named.entry(trigger).or_default().push_str(&format!("{who}\n"));
            }
        }
    }
    let exists = |p: &str| installed.contains(p) || plan::merged_usr_path(p).is_some_and(|q| installed.contains(&q));
    let alternatives = crate::debian::effects::alternatives::resolve(&registrations, &exists);
    let dpkg_status = (!m.statuses.is_empty() || m.base_status.is_some()).then(|| status_text(m, &paragraphs));
    // A link path a package ships as a file of its own stays that file.
    let alternatives: Vec<_> = alternatives.into_iter().filter(|a| !exists(&a.link)).collect();
    let mut triggers: Vec<(String, String)> = named.into_iter().collect();
    if dpkg_status.is_some() {
        triggers.push(("File".into(), file_triggers));
        triggers.push(("Unincorp".into(), String::new()));
    }
    // `config { workdir }`, as Docker's WORKDIR makes it, when no package ships it.
    let workdir = m.workdir.as_deref().filter(|w| !exists(w) && !installed.iter().any(|p| p.starts_with(&format!("{w}/"))));
    let effects = crate::debian::effects::Effects {
        certificates,
        java_cacerts: m.java_cacerts,
        epoch: m.epoch,
        dpkg_status,
        triggers,
        alternatives,
        merged_usr: m.symlinks.iter().any(|(l, _)| l == "/bin"),
    };
    Ok(plan::meta_entries(&plan::MetaInputs {
        workdir,
        accounts: m.accounts.as_ref(),
        base_accounts: m.base_accounts.as_ref(),
        write_accounts: m.write_accounts,
        masters,
        timezone: m.timezone.as_deref(),
        symlinks: &m.symlinks,
        packages: crate::debian::effects::entries(&effects),
        default_accounts: (crate::debian::effects::accounts::DEBIAN_PASSWD, crate::debian::effects::accounts::DEBIAN_GROUP),
    }))
}

/// dpkg's status file: an external base's paragraphs first, then every package's by name
/// (unpacked, with `maintainer-scripts "run"`, for `dpkg --configure -a` to configure).
fn status_text(m: &MetaDrv, paragraphs: &[(String, String)]) -> String {
    let mut status = String::new();
    if let Some(base) = &m.base_status {
        for p in base.split("\n\n").map(str::trim).filter(|p| !p.is_empty()) {
            status.push_str(p);
            status.push_str("\n\n");
        }
    }
    for (_, p) in paragraphs {
        let p = if m.unpacked { p.replacen("\nStatus: install ok installed\n", "\nStatus: install ok unpacked\n", 1) } else { p.clone() };
        status.push_str(p.trim_end());
        status.push_str("\n\n");
    }
    status
}

/// No two package layers of an image may ship one path with different content, unless one of
/// them declares `Replaces` on the other (then the later layer's copy is what the image has).
pub fn check_conflicts(plan: &Plan, img: &ImageDrv, deps: &HashMap<NodeIndex, Record>, store: &Store) -> Result<(), BuildError> {
    let mut seen: BTreeMap<String, (usize, String)> = BTreeMap::new();
    for (i, pl) in img.packages.iter().enumerate() {
        let rec = deps.get(&pl.layer).ok_or_else(|| BuildError::MissingOutput(plan.graph[pl.layer].name.clone(), "files"))?;
        if !matches!(plan.graph[pl.layer].kind, DrvKind::DebLayer(_) | DrvKind::MergedLayer(_)) {
            continue;
        }
        for (path, value) in read_files(store, output(rec, "files")?)? {
            match seen.get(&path) {
                Some((j, v)) if *v != value => {
                    let other = &img.packages[*j];
                    let declared =
                        pl.replaces.iter().any(|r| other.packages.contains(r)) || other.replaces.iter().any(|r| pl.packages.contains(r));
                    if !declared {
                        return Err(PackageError::Conflict { path, a: other.packages.join(", "), b: pl.packages.join(", ") }.into());
                    }
                    seen.insert(path, (i, value));
                }
                Some(_) => {}
                None => {
                    seen.insert(path, (i, value));
                }
            }
        }
    }
    Ok(())
}
